"""One trial: its training set, its training, its outcome. ``run_trial(spec, context)`` is a pure function of the spec.

A stratified real sample (nested across fractions, the same for every policy of one repeat), optionally topped up
with synthetic images drawn only from variants of that sample (or, in the control arm, with the sample's own images
repeated), trained by ``training.fit.fit`` with the spec's settings, checkpoint chosen on the evaluation's validation
slices and evaluated on its test slices. What trials share (the data, the bank, the device) is a
:class:`StudyContext`.

What a trial is (its spec and key) is :mod:`mri_synth.study.trials`'; running many, :mod:`mri_synth.study.runner`'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mri_synth import paths
from mri_synth.data.types import CLASS_NAMES, MRIData, Split
from mri_synth.study.protocol import VALIDATION_SHARE, Evaluation, evaluation, stratified_carve
from mri_synth.study.trials import PROTOCOL, TrialSpec
from mri_synth.synth import registry
from mri_synth.synth.bank import SyntheticBank
from mri_synth.synth.registry import GeneratorSettings
from mri_synth.training.checkpoints import TrainResult
from mri_synth.training.evaluation import metrics_from_proba
from mri_synth.training.fit import fit
from mri_synth.training.models import ModelSpec, create_model, get_spec
from mri_synth.training.readouts import dementia_readouts
from mri_synth.training.settings import TrainConfig


@dataclass
class StudyContext:
    """What trials share: the data, where synthetic images live, how generators run, where to train.

    A trial's generator is rebuilt from its spec's label (the images' content) and ``generators`` (how to run it:
    the device, threads and cache below are put into it), so a trial stays a function of its spec.
    """

    data: MRIData
    bank_root: Path = field(default_factory=lambda: paths.cache_dir() / "bank")
    generator_root: Path = field(default_factory=lambda: paths.cache_dir() / "diffusion")  # trained generators
    generators: GeneratorSettings = field(default_factory=GeneratorSettings)
    device: str = "auto"
    cpu_threads: int = 0  # 0: torch's default; 1 is faster when other jobs share a small CPU (no spin-waiting)
    progress: bool = False  # inner progress bars (training, generation); the study has its own
    compile: bool = False  # torch.compile the classifier: how a trial runs, not what it computes (numerics agree)
    carry_root: Path = field(default_factory=lambda: paths.cache_dir() / "carry")  # weights a carry trial leaves
    _evaluations: dict = field(default_factory=dict, init=False, repr=False)

    def evaluation(self, spec: TrialSpec) -> Evaluation:
        """The pool, validation and test slices of ``spec``'s evaluation (built once per split and fold)."""
        if spec.protocol != PROTOCOL:
            raise ValueError(f"trial {spec.key} was run under protocol {spec.protocol} (checkpoints chosen on test); "
                             "its results stay readable but it cannot be run again: run it as a new trial")
        carve = spec.validation != "none"
        key = (spec.split, spec.fold, carve)
        if key not in self._evaluations:
            self._evaluations[key] = evaluation(self.data, spec.split, spec.fold, carve=carve)
        return self._evaluations[key]

    def generator_settings(self, spec: TrialSpec) -> GeneratorSettings:
        """The settings that build ``spec``'s generator: its label's content, this context's way of running."""
        runtime = replace(self.generators, device=self.device, cpu_threads=self.cpu_threads,
                          generator_root=str(self.generator_root), progress=self.progress)
        return runtime.with_label(spec.synthetic, spec.generator)


@dataclass(frozen=True)
class TrainingSet:
    """A trial's training images and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    real_ids: tuple[str, ...]
    synthetic_sources: tuple[str, ...]  # the real source id of each added image (its own id for the control)
    generator_fingerprint: str


def synthetic_per_class(spec: TrialSpec, full_counts: Sequence[int]) -> list[int]:
    """Images added per class: ``synthetic_fraction`` of each receiving class's size in the full training set.

    Choosing classes (say Mild and Moderate only) gives those classes what they would get with all classes chosen,
    and the others nothing.
    """
    chosen = set(spec.synthetic_classes or CLASS_NAMES)
    return [round(spec.synthetic_fraction * n) if CLASS_NAMES[c] in chosen else 0 for c, n in enumerate(full_counts)]


def _repeat_draw(members: np.ndarray, k: int, seed: int) -> np.ndarray:
    # whole passes over the subset, then a seeded remainder: each real image repeats as evenly as possible
    rng = np.random.default_rng([seed, 99])
    passes, rest = divmod(k, len(members))
    return np.concatenate([np.tile(members, passes), rng.permutation(members)[:rest]]).astype(np.int64)


def training_set(spec: TrialSpec, context: StudyContext) -> TrainingSet:
    """The real sample of the trial's repeat plus its synthetic (or repeated) images.

    The real sample is drawn from the evaluation's pool (validation and test carved out first): slices per class in
    ``slice`` mode, whole people per class in ``subject`` mode; a generator learns from that sample only.
    """
    full = context.evaluation(spec).pool
    real = context.evaluation(spec).real_subset(spec.real_fraction, spec.seed)
    wanted = synthetic_per_class(spec, full.class_counts())
    if spec.synthetic == "none" or sum(wanted) == 0:
        return TrainingSet(real.images, real.labels, real.ids, (), "")
    if spec.synthetic == "repeat":
        pick = np.concatenate([_repeat_draw(np.flatnonzero(real.labels.numpy() == c), k, spec.seed)
                               for c, k in enumerate(wanted) if k])
        extra = real.subset(torch.from_numpy(pick))
        return TrainingSet(torch.cat([real.images, extra.images]), torch.cat([real.labels, extra.labels]),
                           real.ids, extra.ids, "repeat")
    # a generator that learns does so from this trial's real subset only (cached by it: one subset trains once)
    entry = registry.get(spec.synthetic)
    generator = registry.build(spec.synthetic, context.generator_settings(spec),
                               real if entry.learns_from_subset else None, seed=spec.seed)
    bank = SyntheticBank(context.bank_root)
    # the study's rule: variations of the subset's own images; the reconstruction diagnostic's "rest" breaks it on
    # purpose (the pool's other images, through the subset's autoencoder)
    drawn = real if entry.draws_from == "subset" else rest_of_pool(full, real)
    images, labels, sources = [real.images], [real.labels], []
    for c, k in enumerate(wanted):
        if not k:
            continue
        members = drawn.subset((drawn.labels == c).nonzero().flatten())
        if not len(members):  # "rest" of a class whose every person is in the subset (subject mode, Moderate: 2
            members = real.subset((real.labels == c).nonzero().flatten())  # people): its own, as the class prior
        img, lab, _, src = registry.fill_and_sample(generator, bank, members, k, seed=spec.seed,
                                                    progress=context.progress)
        images.append(img), labels.append(lab), sources.extend(src)
    return TrainingSet(torch.cat(images), torch.cat(labels), real.ids, tuple(sources), generator.fingerprint)


def rest_of_pool(pool: Split, subset: Split) -> Split:
    """The pool's images outside ``subset`` (in ``subject`` mode: the other training people's slices)."""
    taken = set(subset.ids)
    return pool.subset(torch.tensor([i for i, image_id in enumerate(pool.ids) if image_id not in taken],
                                    dtype=torch.int64))


def step_budget(spec: TrialSpec, pool_size: int) -> int | None:
    """Optimizer steps of the trial: ``max_steps``; with ``equal_steps``, ``epochs x ceil(pool / batch)`` for
    every arm (the 100% pool after the validation carve); ``None``: the thesis's epochs of its own training set."""
    if spec.max_steps:
        return spec.max_steps
    return spec.epochs * math.ceil(pool_size / spec.batch_size) if spec.equal_steps else None


def selection_criterion(spec: TrialSpec) -> str:
    """What chooses the checkpoint on validation: the loss in ``slice`` mode, the dementia AUC in ``subject``."""
    return "val_loss" if spec.split == "slice" else "val_dementia_auc"


def test_readouts(proba: torch.Tensor, test: Split) -> dict[str, float]:
    """Every reported number of one checkpoint on the test slices: the four-way metrics and the dementia readouts."""
    four_way = metrics_from_proba(proba, test.labels)
    groups = None if test.groups is None else test.groups.numpy()
    return {"test_loss": four_way.pop("loss"), **four_way, **dementia_readouts(proba.numpy(), test.labels, groups)}


def train_config(spec: TrialSpec, context: StudyContext) -> TrainConfig:
    """How ``spec`` trains (``training.settings.TrainConfig``): its settings, the budget resolved against its
    evaluation's 100% pool, and this context's way of running."""
    budget = step_budget(spec, len(context.evaluation(spec).pool))
    return TrainConfig(**{**vars(spec.training), "max_steps": budget, "equal_steps": False}, augment=spec.augment,
                       device=context.device, seed=spec.seed, progress=context.progress, compile=context.compile)


def model_spec(spec: TrialSpec) -> ModelSpec:
    """The trial's model spec: the registry's, at ``spec.input_size`` when set."""
    return get_spec(spec.arch).with_input_size(spec.input_size) if spec.input_size else get_spec(spec.arch)


def trial_outcome(spec: TrialSpec, context: StudyContext, train_set: TrainingSet, result: TrainResult,
                  seconds: float) -> dict[str, Any]:
    """A trial's outcome from its training result: metrics, history, generator, test predictions.

    One place for every path that trains trials (one at a time here, stacked in ``trial_groups``), so their outcomes
    have one form. ``seconds`` is the trial's own time (its share of a stack's).
    """
    test = context.evaluation(spec).test
    best, last = test_readouts(result.test_proba_best, test), test_readouts(result.test_proba_last, test)
    chosen = result.history[result.history.step == result.best_step].iloc[-1]  # what validation saw there
    metrics = {**best, **{f"{k}_last": v for k, v in last.items()},
               **{k: float(chosen[k]) for k in ("val_loss", "val_dementia_auc") if k in chosen},
               "best_step": float(result.best_step), "steps": float(result.optimizer_steps),
               "train_images": float(len(train_set.labels)), "real_images": float(len(train_set.real_ids)),
               "synthetic_images": float(len(train_set.synthetic_sources)), "train_time_s": seconds}
    return {"metrics": metrics, "history": result.history.to_dict(orient="list"),
            "generator_fingerprint": train_set.generator_fingerprint,
            "predictions": {"test_ids": np.array(test.ids), "test_labels": test.labels.numpy(),
                            "test_people": (test.groups if test.groups is not None
                                            else torch.full_like(test.labels, -1)).numpy(),
                            "proba_best": result.test_proba_best.numpy().astype(np.float16),
                            "proba_last": result.test_proba_last.numpy().astype(np.float16)}}


def run_trial(spec: TrialSpec, context: StudyContext) -> dict[str, Any]:
    """Train and evaluate one trial; return its metrics, its history, its test probabilities, what it trained on.

    The checkpoint is chosen on the evaluation's validation slices (:func:`selection_criterion`); the test slices
    are read only to report the chosen checkpoint (``test_loss``, ..., the primary numbers) and the last step
    (``..._last``).
    """
    start = time.perf_counter()
    ev = context.evaluation(spec)
    train_set = training_set(spec, context)
    synthesis = time.perf_counter() - start  # the generator's part (training or loading it, variations): not the
    start = time.perf_counter()              # classifier's, so train_time_s compares across arms and machines
    images, labels = train_set.images, train_set.labels
    validation = (ev.validation.images, ev.validation.labels) if spec.validation == "carved" else None
    if spec.validation == "own":  # the thesis's "validation loss", read literally: from the arm's own training set
        rest, carved = (torch.from_numpy(i) for i in stratified_carve(labels.numpy(), VALIDATION_SHARE, spec.seed))
        validation, images, labels = (images[carved], labels[carved]), images[rest], labels[rest]
    model = carried_weights(spec, context) if spec.carry else spec.arch
    result = fit(model, images, labels, ev.test.images, ev.test.labels, train_config(spec, context),
                 spec=model_spec(spec), pretrained=spec.pretrained, validation=validation,
                 selection=selection_criterion(spec))
    if spec.carry:
        keep_carried_weights(spec, context, result.model)
    outcome = trial_outcome(spec, context, train_set, result, time.perf_counter() - start)
    outcome["metrics"]["synthesis_time_s"] = synthesis
    if spec.validation == "own":  # train_images counts the whole training set, these among them
        outcome["metrics"]["own_validation_images"] = float(len(validation[1]))
    return outcome


def carried_weights(spec: TrialSpec, context: StudyContext) -> torch.nn.Module | str:
    """What a ``carry`` trial starts from: the model repeat ``seed - 1`` of the same spec ended with; repeat 0 starts
    from fresh weights (the registry's name). The thesis's loop, read as creating its model once."""
    if spec.seed == 0:
        return spec.arch
    previous = replace(spec, seed=spec.seed - 1)
    path = context.carry_root / f"{previous.key}.pt"
    if not path.exists():
        raise ValueError(f"trial {spec.key} (repeat {spec.seed}) continues from the weights repeat {spec.seed - 1} "
                         f"ended with, and {path} does not hold them: run the chain in order from repeat 0 (a "
                         "chain whose weights were deleted is run again from its first repeat, in a new results "
                         "folder)")
    model = create_model(spec.arch, pretrained=False, spec=model_spec(spec))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def keep_carried_weights(spec: TrialSpec, context: StudyContext, model: torch.nn.Module) -> None:
    """Store the weights a ``carry`` trial ended with, for its next repeat (atomically: a killed run keeps none)."""
    context.carry_root.mkdir(parents=True, exist_ok=True)
    path = context.carry_root / f"{spec.key}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)
