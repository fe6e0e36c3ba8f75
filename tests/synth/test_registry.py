"""One place per generator: a generator registered once is an arm of the study, the command line and the configs."""

import json
from typing import Any, Sequence

import pytest
import torch

from mri_synth import cli
from mri_synth.chapters.generation import GenerationConfig, fill_bank
from mri_synth.chapters.training import ArchitectureStudy
from mri_synth.study import trials as study
from mri_synth.study.protocol import evaluation
from mri_synth.synth import registry
from mri_synth.synth.base import SourceResult, check_sources, fingerprint_of


class FlipGenerator:
    """A generator known only to this test: each variation is its source flipped left-right, then shifted."""

    name = "flip"
    sources_per_call = 64
    variants_per_call = 8

    def __init__(self, trained_on: int = 0) -> None:
        self.trained_on = trained_on

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.name, self.describe())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": "flip", "trained_on": self.trained_on}

    def estimate_cost_usd(self, n_images: int) -> float:
        return 0.0

    def generate(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], n_variants: int, seed: int,
                 *, first_variant: int = 0) -> list[SourceResult]:
        check_sources(images, labels, ids)
        return [SourceResult(sid, torch.stack([img.flip(-1).roll(v, -2) for v in
                                               range(first_variant, first_variant + n_variants)]), model="flip")
                for img, sid in zip(images, ids)]


TRAINED_ON: list[int] = []


def _build(settings, train_on, seed):
    TRAINED_ON.append(len(train_on))
    return FlipGenerator(len(train_on))


FLIP = registry.GeneratorEntry("flip", label=lambda settings: "flip-v1", build=_build, learns_from_subset=True)


@pytest.fixture()
def flip():
    TRAINED_ON.clear()
    with registry.registered(FLIP) as entry:
        yield entry
    assert "flip" not in registry.names()


def test_a_generator_registered_once_is_an_arm_of_the_command_line_and_the_configs(flip, tmp_path, capsys,
                                                                                   sample_data):
    # the study's spec, arm parser and notebook config know it without any other edit
    assert "flip" in study.synthetic_kinds()
    config = ArchitectureStudy(data_source="sample", arms=("none", "flip"), real_fractions=(0.3,), n_seeds=1)
    assert [s.synthetic for s in config.specs] == ["none", "flip"] and config.specs[1].generator == "flip-v1"
    assert GenerationConfig(generator="flip").generator == "flip"
    # ... and so does the command line, end to end: the trial trains on real + flipped images of its own subset
    args = ["study", "--data", "sample", "--fractions", "0.3", "--arms", "flip", "--seeds", "1", "--epochs", "1",
            "--batch-size", "32", "--results", str(tmp_path)]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert "30% real + 70% flip" in capsys.readouterr().out
    (trial,) = [json.loads(p.read_text()) for p in (tmp_path / "cnn" / "trials").glob("*.json")]
    assert trial["spec"]["synthetic"] == "flip"
    assert trial["columns"]["generator_kind"] == "learned on the trial's subset"
    real_30 = len(evaluation(sample_data, "slice").real_subset(0.3, seed=0))  # from the pool left after validation
    assert TRAINED_ON == [real_30] == [trial["metrics"]["real_images"]]  # it learned from the trial's subset only
    pool_counts = evaluation(sample_data, "slice").pool.class_counts()
    assert trial["metrics"]["synthetic_images"] == sum(round(0.7 * n) for n in pool_counts)


def test_unknown_generator_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown generator 'dalle2'.*diffusion, openai, folder"):
        registry.get("dalle2")
    with pytest.raises(ValueError, match="synthetic must be one of"):
        study.TrialSpec(synthetic="dalle2", synthetic_fraction=0.7)
    with pytest.raises(ValueError, match="arm of the study"):
        registry.register(registry.GeneratorEntry("repeat", label=str, build=lambda *a: None))


def test_one_fill_and_sample_path_serves_notebook_02(flip, sample_data, tmp_path):
    config = GenerationConfig(data_source="sample", generator="flip", n_variants=2, bank_dir=str(tmp_path))
    run = fill_bank(sample_data, config, progress=False)
    images, labels, ids, sources = run.synthetic()
    assert len(images) == 2 * len(run.sources) and set(sources) == set(run.sources.ids)
    first = run.sources.ids.index(sources[0])
    variant = int(ids[0].rsplit("/v", 1)[1])
    assert torch.equal(images[0], run.sources.images[first].flip(-1).roll(variant, -2))


def test_latent_presets_are_the_diffusion_arm_through_the_one_path(sample_data, tmp_path):
    from mri_synth.study.trial import StudyContext, training_set
    from mri_synth.study.trials import TrialSpec
    from mri_synth.synth.latent import LatentDiffusionGenerator

    settings = registry.GeneratorSettings(diffusion_preset="latent-toy")
    spec = study.study_grid(["cnn"], [0.3], ["diffusion"], [0], settings, epochs=1)[0]
    assert spec.generator == "latent-toy" and spec.policy == "30% real + 70% diffusion"
    context = StudyContext(data=sample_data, bank_root=tmp_path / "bank", generator_root=tmp_path / "generators")
    generator = registry.build("diffusion", context.generator_settings(spec), context.evaluation(spec).pool, seed=0)
    assert isinstance(generator, LatentDiffusionGenerator)
    ts = training_set(spec, context)
    assert ts.generator_fingerprint.startswith("latent") and set(ts.synthetic_sources) <= set(ts.real_ids)
    with pytest.raises(ValueError, match="diffusion presets: toy, small, quick, gpu, latent-toy, latent-cpu, "
                                         "latent-cpu-fast, latent-gpu"):
        TrialSpec(synthetic="diffusion", synthetic_fraction=0.7, generator="latent-huge")


def test_the_pixel_arm_trains_the_pixel_generator_beside_a_latent_diffusion_arm(sample_data, tmp_path):
    from mri_synth.study.trial import StudyContext, training_set
    from mri_synth.synth.diffusion import DiffusionGenerator

    settings = registry.GeneratorSettings(diffusion_preset="latent-toy", pixel_preset="toy")
    latent, pixel = study.study_grid(["cnn"], [0.3], ["diffusion", "pixel_diffusion"], [0], settings, epochs=1)
    assert (latent.generator, pixel.generator) == ("latent-toy", "toy")  # the label says which generator ran
    assert pixel.policy == "30% real + 70% pixel_diffusion" != latent.policy and pixel.key != latent.key
    default = study.study_grid(["cnn"], [0.3], ["pixel_diffusion"], [0],
                               registry.GeneratorSettings(diffusion_preset="latent-cpu-fast"), epochs=1)[0]
    assert default.generator == "quick"  # the pixel preset of latent_fidelity.md, whatever the latent preset
    context = StudyContext(data=sample_data, bank_root=tmp_path / "bank", generator_root=tmp_path / "generators")
    built = registry.build("pixel_diffusion", context.generator_settings(pixel), context.evaluation(pixel).pool)
    assert isinstance(built, DiffusionGenerator) and built.fingerprint.startswith("diffusion")
    ts = training_set(pixel, context)
    assert ts.generator_fingerprint.startswith("diffusion-")  # the pixel generator's (the latent one's: latent-)
    assert set(ts.synthetic_sources) <= set(ts.real_ids) and len(ts.synthetic_sources) > 0
    with pytest.raises(ValueError, match="pixel-space generator's, got the latent preset 'latent-toy'"):
        study.study_grid(["cnn"], [0.3], ["pixel_diffusion"], [0],
                         registry.GeneratorSettings(pixel_preset="latent-toy"), epochs=1)
