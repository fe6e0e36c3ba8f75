"""A grid's generators prepared before its trials: one job per (evaluation, repeat, fraction, label), trained or
found once, its bank filled with exactly what the grid's trials then draw."""

from dataclasses import replace

import pytest
import torch

from mri_synth.study import generators as G
from mri_synth.study import trial
from mri_synth.study import trials as S
from mri_synth.study.generators import prepare_generators
from mri_synth.study.runner import run_study
from mri_synth.study.trial import StudyContext
from mri_synth.study.trials import study_grid
from mri_synth.synth import registry
from mri_synth.synth.base import SourceResult, check_sources, fingerprint_of
from mri_synth.synth.registry import GeneratorSettings


class ShiftGenerator:
    """A free generator known only to this test: variation v of a source is the source brightened by v + 1."""

    name = "shift"
    sources_per_call = 64
    variants_per_call = 8

    def __init__(self, trained_on: int) -> None:
        self.trained_on = trained_on

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.name, {"trained_on": self.trained_on})

    def describe(self) -> dict:
        return {"name": self.name, "trained_on": self.trained_on}

    def estimate_cost_usd(self, n_images: int) -> float:
        return 0.0

    def generate(self, images, labels, ids, n_variants, seed, *, first_variant=0):
        check_sources(images, labels, ids)
        return [SourceResult(sid, torch.stack([(image.int() + v + 1).clamp(0, 255).to(torch.uint8)
                                               for v in range(first_variant, first_variant + n_variants)]))
                for image, sid in zip(images, ids)]


BUILT: list[int] = []


def _build(settings, train_on, seed):
    BUILT.append(len(train_on))
    return ShiftGenerator(len(train_on))


SHIFT = registry.GeneratorEntry("shift", label=lambda settings: "shift-v1", build=_build, learns_from_subset=True)


@pytest.fixture()
def shift():
    BUILT.clear()
    with registry.registered(SHIFT) as entry:
        yield entry


def test_one_job_per_generator_and_one_spec_per_way_of_drawing(shift):
    grid = S.study_grid(["cnn", "vit"], [1.0, 0.3, 0.1], ["none", "repeat", "shift", "shift:Moderate_Demented",
                                                          "shift+autoaugment"], range(2), epochs=1)
    jobs = G.generator_jobs(grid)
    # no job for the control arms nor at 100% real; the architectures and augmentations share a generator
    assert [(j.seed, j.real_fraction) for j in jobs] == [(0, 0.3), (0, 0.1), (1, 0.3), (1, 0.1)]
    assert {(j.split, j.synthetic, j.generator) for j in jobs} == {("slice", "shift", "shift-v1")}
    for job in jobs:
        assert all(s.synthetic == "shift" and s.seed == job.seed for s in job.specs)
        assert sorted(s.synthetic_classes for s in job.specs) == [(), ("Moderate_Demented",)]  # two ways to draw
    assert jobs[0].name == "slice repeat 0, 30% real, shift shift-v1"
    subject = [replace(s, split="subject") for s in grid]
    assert len(G.generator_jobs(grid + subject)) == 8  # each evaluation has its own subsets
    assert G.generator_jobs(S.study_grid(["cnn"], [0.3], ["none", "repeat"], [0])) == []


def test_the_runtime_rebuilds_the_context_in_a_worker(sample_data, tmp_path):
    context = trial.StudyContext(data=sample_data, bank_root=tmp_path / "bank", generator_root=tmp_path / "gen",
                                 device="cpu", cpu_threads=1)
    runtime = G.Runtime.of(context, "sample")
    assert (runtime.data_source, runtime.bank_root, runtime.device, runtime.cpu_threads) == (
        "sample", str(tmp_path / "bank"), "cpu", 1)
    assert hash(runtime) == hash(G.Runtime.of(context, "sample"))  # a key of the worker's one context
    rebuilt = runtime.context()
    assert rebuilt.bank_root == context.bank_root and rebuilt.generator_root == context.generator_root
    assert rebuilt.data.fingerprint == sample_data.fingerprint and rebuilt.generators == context.generators


def test_prepared_banks_hold_what_the_trials_draw(shift, sample_data, tmp_path):
    context = trial.StudyContext(data=sample_data, bank_root=tmp_path / "bank", generator_root=tmp_path / "gen",
                                 device="cpu")
    grid = S.study_grid(["cnn"], [0.3], ["none", "shift", "shift:Moderate_Demented"], [0, 1], epochs=1)
    table = G.prepare_generators(grid, context, "sample", workers=1, progress=False)
    assert table[["seed", "real_fraction", "synthetic", "generator"]].values.tolist() == [
        [0, 0.3, "shift", "shift-v1"], [1, 0.3, "shift", "shift-v1"]]
    subsets = [len(context.evaluation(grid[0]).real_subset(0.3, seed)) for seed in (0, 1)]
    assert table.real_images.tolist() == subsets and BUILT[:2] == subsets  # learned from each repeat's subset
    pool = context.evaluation(grid[0]).pool.class_counts()
    drawn = sum(round(0.7 * n) for n in pool) + round(0.7 * pool[1])  # all classes, then Moderate only
    assert table.variations_drawn.tolist() == [drawn, drawn] and table.trained_now.all()
    assert table.attrs["wall_s"] > 0 and set(table.fingerprint) == {ShiftGenerator(n).fingerprint for n in subsets}
    # a trial then finds every variation it draws in the bank: nothing is generated again
    made_before = len(list((tmp_path / "bank").rglob("*.png")))
    assert made_before >= drawn
    ts = trial.training_set(grid[1], context)
    assert len(ts.synthetic_sources) == sum(round(0.7 * n) for n in pool)
    assert len(list((tmp_path / "bank").rglob("*.png"))) == made_before


def test_workers_must_be_at_least_one(sample_data, tmp_path):
    context = trial.StudyContext(data=sample_data, bank_root=tmp_path / "bank")
    with pytest.raises(ValueError, match="workers must be >= 1 \\(processes at once\\), got 0"):
        G.prepare_generators([], context, workers=0)


TOY = GeneratorSettings(diffusion_preset="latent-toy")
TINY = dict(epochs=1, equal_steps=True, batch_size=32, input_size=32, precision="fp32")


def _grid():
    return study_grid(["cnn"], [1.0, 0.3], ["none", "repeat", "diffusion", "diffusion:Mild_Demented,Moderate_Demented"],
                      range(2), TOY, **TINY)


def test_prepared_twice_trains_nothing_the_second_time_and_the_study_only_reads(sample_data, tmp_path, monkeypatch):
    context = StudyContext(data=sample_data, bank_root=tmp_path / "bank", generator_root=tmp_path / "generators",
                           generators=TOY, device="cpu", cpu_threads=1)
    first = prepare_generators(_grid(), context, workers=2, progress=False)
    assert len(first) == 2 and first.trained_now.all() and (first.variations_drawn > 0).all()
    assert (first.training_cpu_min > 0).all() and (first.trained_on != "").all()
    again = prepare_generators(_grid(), context, workers=2, progress=False)
    assert not again.trained_now.any()  # found in the cache
    assert list(again.fingerprint) == list(first.fingerprint)
    assert list(again.variations_drawn) == list(first.variations_drawn)

    # the study then trains no generator and makes no variation: every image is already in the bank
    def no_fill(*args, **kwargs):
        raise AssertionError("the bank was filled during the study")

    monkeypatch.setattr("mri_synth.synth.bank.SyntheticBank.fill", no_fill)
    monkeypatch.setattr("mri_synth.synth.latent.LatentDiffusionGenerator.train",
                        lambda *a, **k: pytest.fail("a generator was trained during the study"))
    specs = [s for s in _grid() if s.synthetic == "diffusion" and s.seed == 0]
    results, _ = run_study(specs, context, tmp_path / "results", progress=False)
    assert set(results.policy) == {"30% real + 70% diffusion", "30% real + 70% diffusion (Mild+Moderate)"}
