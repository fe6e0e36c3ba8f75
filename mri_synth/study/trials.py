"""The study: trial specs, the synthetic-mix policy, and the resumable trial runner.

A trial is a frozen :class:`TrialSpec`; :func:`run_trial` is a pure function of it (and of the data and the
generators it names): a stratified real sample (nested across fractions, the same for every policy of one repeat),
optionally topped up with synthetic images drawn only from variants of that sample (or, in the control arm, with the
sample's own images repeated), trained by ``train.fit`` and evaluated on the fixed held-out split.

Running a grid of specs (resumable, one file per finished trial) is :mod:`mri_synth.runner`'s; statistics and figures
are ``stats`` and ``plots``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch

from mri_synth import paths
from mri_synth.training.augment import POLICIES
from mri_synth.data.types import CLASS_NAMES, MRIData, Split, check_fraction
from mri_synth.data.sampling import stratified_sample
from mri_synth.study.protocol import Evaluation, check_mode, evaluation, fold_of
from mri_synth.synth import registry
from mri_synth.synth.registry import GeneratorSettings

if TYPE_CHECKING:
    from mri_synth.training.models import ModelSpec
    from mri_synth.training.settings import TrainConfig
    from mri_synth.training.checkpoints import TrainResult

PROTOCOL = 2
"""The trial protocol: 2 carves a validation set that chooses checkpoints (the test split is read only for the
reported numbers) and knows the ``slice``/``subject`` evaluations; 1 marks older trials, chosen on test."""

CONTROL_ARMS = ("none", "repeat")
"""Arms that add no generated image: none (real images only) and repeat (the control: the trial's own real images
repeated to the same size). Every other synthetic kind is a generator of :mod:`mri_synth.synth.registry`."""


def synthetic_kinds() -> tuple[str, ...]:
    """Every value ``TrialSpec.synthetic`` may take: the control arms, then the registered generators."""
    return (*CONTROL_ARMS, *registry.names())


def generator_kind(synthetic: str) -> str:
    """How the tables describe an arm's added images: none, control, learned on the trial's subset, external."""
    return {"none": "none", "repeat": "control"}.get(synthetic) or registry.get(synthetic).kind


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines one trial. Its :attr:`key` is a stable hash of the content."""

    arch: str = "cnn"  # a name in the model registry (cnn, resnet18, vit, or a timm model)
    real_fraction: float = 1.0  # share of the real training images, stratified
    synthetic: str = "none"  # none, repeat or a registered generator (synthetic_kinds())
    synthetic_fraction: float = 0.0  # images added, as a share of the FULL training set's size
    synthetic_classes: tuple[str, ...] = ()  # classes that receive them; empty means all
    augment: str = "none"  # a policy of augment.POLICIES
    epochs: int = 10  # training budget in epochs; with equal_steps, in epochs of the 100% pool for every arm
    max_steps: int | None = None  # training budget in optimizer steps, the same for every arm
    equal_steps: bool = False  # every arm trains epochs x ceil(100% pool / batch_size) steps (the fair comparison)
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam's; the thesis used none
    split: str = "slice"  # the evaluation: slice (the source's split, thesis-comparable) or subject (people unseen)
    seed: int = 0  # the repeat index: the real subset (shared by every policy), the training seed, the subject fold
    pretrained: bool | None = None  # None: the registry's default for the architecture
    input_size: int = 0  # model input side in pixels; 0 means the registry's (224 for the pretrained models)
    generator: str = ""  # the generator's label (registry): what decides its images; empty for none/repeat arms
    protocol: int = PROTOCOL  # 2: a validation set chooses checkpoints; 1: older trials chosen on test (read only)

    def __post_init__(self) -> None:
        check_fraction(self.real_fraction, "real_fraction")
        check_mode(self.split)
        if self.equal_steps and self.max_steps:
            raise ValueError("set either max_steps (a budget in steps) or equal_steps (epochs of the 100% pool), "
                             "not both")
        object.__setattr__(self, "synthetic_classes", tuple(sorted(self.synthetic_classes)))
        if self.synthetic not in synthetic_kinds():
            raise ValueError(f"synthetic must be one of {synthetic_kinds()}, got {self.synthetic!r}")
        if self.augment not in POLICIES:
            raise ValueError(f"augment must be one of {tuple(POLICIES)}, got {self.augment!r}")
        # Only arms that use a generator carry its label, so changing a generator's settings reruns only its arms.
        if self.synthetic in CONTROL_ARMS:
            object.__setattr__(self, "generator", "")
        elif not self.generator:
            object.__setattr__(self, "generator", registry.get(self.synthetic).label(GeneratorSettings()))
        else:  # a label the generator cannot build from fails here, naming what it can
            registry.get(self.synthetic).label(GeneratorSettings().with_label(self.synthetic, self.generator))
        if not 0 <= self.synthetic_fraction <= 10:
            raise ValueError(f"synthetic_fraction must be in [0, 10], got {self.synthetic_fraction!r}")
        if (self.synthetic == "none") != (self.synthetic_fraction == 0):
            raise ValueError(
                f"synthetic={self.synthetic!r} with synthetic_fraction={self.synthetic_fraction}: use synthetic='none' "
                "exactly when nothing is added (synthetic_fraction=0)"
            )
        unknown = set(self.synthetic_classes) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(f"unknown synthetic_classes {sorted(unknown)}: choose from {', '.join(CLASS_NAMES)}")
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("epochs and max_steps must be >= 1")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        """A spec from its stored form (a trial file's ``spec``), with a message when this version cannot read it."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"a trial spec with fields {sorted(unknown)} that this version does not know: it was "
                             "written by another version of mri_synth; read it with that version or rerun the trial")
        # specs stored before the protocol field existed were chosen on test: readable, never reused for new trials
        values = {"protocol": 1, **values}
        return cls(**{k: tuple(v) if k == "synthetic_classes" else v for k, v in values.items()})

    @property
    def key(self) -> str:
        """A stable hash of the spec's content (field order and Python version do not matter)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def budget(self) -> str:
        """``steps`` (max_steps), ``equal_steps`` (epochs of the 100% pool for every arm) or ``epochs``."""
        return "steps" if self.max_steps else "equal_steps" if self.equal_steps else "epochs"

    @property
    def fold(self) -> int:
        """The test fold (``subject`` mode: repeat ``seed`` uses fold ``seed % 5``; ``slice`` mode: 0)."""
        return fold_of(self.split, self.seed)

    @property
    def policy(self) -> str:
        """A human label of the arm, e.g. ``30% real + 70% diffusion``."""
        label = f"{self.real_fraction:.0%} real"
        if self.synthetic != "none":
            label += f" + {self.synthetic_fraction:.0%} {self.synthetic}"
            if self.synthetic_classes:
                label += f" ({'+'.join(c.split('_')[0] for c in self.synthetic_classes)})"
        if self.augment != "none":
            label += f" + {self.augment}"
        return label

    def table_columns(self) -> dict[str, Any]:
        """The spec as the key columns of the results tables."""
        return {
            "trial_key": self.key, "arch": self.arch, "real_fraction": self.real_fraction,
            "synthetic": self.synthetic, "synthetic_fraction": self.synthetic_fraction,
            "synthetic_classes": "+".join(self.synthetic_classes) or "all", "augment": self.augment,
            "split": self.split, "fold": self.fold, "protocol": self.protocol,
            "budget": self.budget, "epochs": self.epochs, "max_steps": self.max_steps or 0,
            "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
            "input_size": self.input_size,
            "pretrained": {None: "default", True: "yes", False: "no"}[self.pretrained], "seed": self.seed,
            "policy": self.policy, "generator": self.generator, "generator_kind": generator_kind(self.synthetic),
        }


def parse_arm(arm: str, real_fraction: float) -> dict[str, Any]:
    """Spec fields of an arm written as text: parts joined by ``+``.

    ``none``, ``basic``, ``autoaugment``, ... (``augment.POLICIES``): real images with that augmentation; ``repeat``
    or a registered generator (``diffusion``, ``openai``, ``folder``, ...): fill the real fraction up to the full
    training-set size with that kind of image;
    ``diffusion:Mild_Demented,Moderate_Demented``: only those classes receive synthetic images;
    ``diffusion+autoaugment``: both.
    """
    out: dict[str, Any] = {}
    for part in arm.split("+"):
        name, _, classes = part.partition(":")
        if name in POLICIES:
            if name != "none":
                out["augment"] = name
        elif name in synthetic_kinds():
            out |= {"synthetic": name, "synthetic_fraction": round(1 - real_fraction, 6)}
            if classes:
                out["synthetic_classes"] = tuple(classes.split(","))
        else:
            raise ValueError(f"unknown arm part {part!r} in {arm!r}: use an augmentation ({', '.join(POLICIES)})"
                             f", a synthetic kind ({', '.join(synthetic_kinds()[1:])}) or 'kind:Class,Class', "
                             "joined by +")
    return out


def study_grid(archs: Sequence[str], real_fractions: Sequence[float], arms: Sequence[str], seeds: Iterable[int],
               generators: GeneratorSettings | None = None, **train: Any) -> list[TrialSpec]:
    """Every (architecture, real fraction, arm, seed), seed-major so an interrupted study has whole repeats.

    Arms that would add nothing (a synthetic fill at 100% real) are left out; ``arm@0.3,0.4`` runs an arm at those
    real fractions only. ``generators`` gives each generator arm its label (default settings when omitted);
    ``train`` sets the other spec fields (epochs, max_steps, batch_size, lr, pretrained, input_size).
    """
    settings = generators or GeneratorSettings()
    labels: dict[str, str] = {}
    specs = []
    for seed in seeds:
        for arch in archs:
            for fraction in real_fractions:
                for arm in arms:
                    arm, _, only_at = arm.partition("@")  # "autoaugment@0.3": this arm at these fractions only
                    if only_at and not any(abs(fraction - float(f)) < 1e-9 for f in only_at.split(",")):
                        continue
                    extra = parse_arm(arm, fraction)
                    if "synthetic" in extra and extra["synthetic_fraction"] <= 0:
                        continue
                    kind = extra.get("synthetic", "none")
                    if kind not in CONTROL_ARMS:
                        if kind not in labels:
                            labels[kind] = registry.get(kind).label(settings)
                        extra["generator"] = labels[kind]
                    specs.append(TrialSpec(arch=arch, real_fraction=fraction, seed=seed, **extra, **train))
    return list(dict.fromkeys(specs))  # the same spec twice is one trial


# -------------------------------------------------------------------------------------------------- one trial


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
    bf16: bool | None = None  # classifier autocast; None: train.default_bf16 (tests compare paths in fp32)
    _evaluations: dict = field(default_factory=dict, init=False, repr=False)

    def evaluation(self, spec: TrialSpec) -> Evaluation:
        """The pool, validation and test slices of ``spec``'s evaluation (built once per split and fold)."""
        if spec.protocol != PROTOCOL:
            raise ValueError(f"trial {spec.key} was run under protocol {spec.protocol} (checkpoints chosen on test); "
                             "its results stay readable but it cannot be run again: run it as a new trial")
        key = (spec.split, spec.fold)
        if key not in self._evaluations:
            self._evaluations[key] = evaluation(self.data, spec.split, spec.fold)
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
    from mri_synth.synth import SyntheticBank

    # a generator that learns does so from this trial's real subset only (cached by it: one subset trains once)
    entry = registry.get(spec.synthetic)
    generator = registry.build(spec.synthetic, context.generator_settings(spec),
                               real if entry.learns_from_subset else None, seed=spec.seed)
    bank = SyntheticBank(context.bank_root)
    images, labels, sources = [real.images], [real.labels], []
    for c, k in enumerate(wanted):
        if not k:
            continue
        members = real.subset((real.labels == c).nonzero().flatten())
        img, lab, _, src = registry.fill_and_sample(generator, bank, members, k, seed=spec.seed,
                                                    progress=context.progress)
        images.append(img), labels.append(lab), sources.extend(src)
    return TrainingSet(torch.cat(images), torch.cat(labels), real.ids, tuple(sources), generator.fingerprint)


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
    from mri_synth.training.readouts import dementia_readouts
    from mri_synth.training.evaluation import metrics_from_proba

    four_way = metrics_from_proba(proba, test.labels)
    groups = None if test.groups is None else test.groups.numpy()
    return {"test_loss": four_way.pop("loss"), **four_way, **dementia_readouts(proba.numpy(), test.labels, groups)}


def train_config(spec: TrialSpec, context: StudyContext) -> "TrainConfig":
    """How ``spec`` trains (``train.TrainConfig``): its budget resolved against its evaluation's 100% pool."""
    from mri_synth.training.settings import TrainConfig

    return TrainConfig(epochs=spec.epochs, max_steps=step_budget(spec, len(context.evaluation(spec).pool)),
                       batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay, augment=spec.augment,
                       device=context.device, seed=spec.seed, progress=context.progress, bf16=context.bf16)


def model_spec(spec: TrialSpec) -> "ModelSpec":
    """The trial's model spec: the registry's, at ``spec.input_size`` when set."""
    from mri_synth.training.models import get_spec

    return get_spec(spec.arch).with_input_size(spec.input_size) if spec.input_size else get_spec(spec.arch)


def trial_outcome(spec: TrialSpec, context: StudyContext, train_set: TrainingSet, result: "TrainResult",
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
    from mri_synth.training.fit import fit

    start = time.perf_counter()
    ev = context.evaluation(spec)
    train_set = training_set(spec, context)
    result = fit(spec.arch, train_set.images, train_set.labels, ev.test.images, ev.test.labels,
                 train_config(spec, context), spec=model_spec(spec), pretrained=spec.pretrained,
                 validation=(ev.validation.images, ev.validation.labels), selection=selection_criterion(spec))
    return trial_outcome(spec, context, train_set, result, time.perf_counter() - start)


__all__ = ["CONTROL_ARMS", "PROTOCOL", "StudyContext", "TrainingSet", "TrialSpec", "generator_kind", "parse_arm",
           "model_spec", "run_trial", "selection_criterion", "step_budget", "study_grid", "synthetic_kinds",
           "synthetic_per_class", "test_readouts", "train_config", "trial_outcome", "training_set"]
