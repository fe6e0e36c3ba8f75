"""Trial specs: what one trial is, its stable key, the arms written as text, and a study's grid of trials.

A trial is a frozen :class:`TrialSpec`: the architecture, the real fraction, the synthetic policy, the augmentation,
the evaluation and repeat, and the classifier's training settings (it *is* a ``training.settings.TrainSettings``:
those are declared once, there). Its :attr:`TrialSpec.key` names its result file: a field enters the key only when
it differs from its default, unless it was among the fields of the recorded study (:data:`RECORDED_FIELDS`), so
adding a field never renames a recorded trial.

Running one trial is :mod:`mri_synth.study.trial`'s; a grid of them (resumable) :mod:`mri_synth.study.runner`'s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Iterable, Sequence

from mri_synth.data.types import CLASS_NAMES, check_fraction
from mri_synth.study.protocol import check_mode, fold_of
from mri_synth.synth import registry
from mri_synth.synth.registry import GeneratorSettings
from mri_synth.training.augment import POLICIES
from mri_synth.training.settings import TrainSettings

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


RECORDED_FIELDS = frozenset({
    "arch", "real_fraction", "synthetic", "synthetic_fraction", "synthetic_classes", "augment", "epochs", "max_steps",
    "equal_steps", "batch_size", "lr", "weight_decay", "split", "seed", "pretrained", "input_size", "generator",
    "protocol"})
"""The spec's fields when the real-data study was recorded (2026-12): all of them enter every key, defaults too.
A field added since enters a key only when it differs from its default, so adding one renames no recorded trial."""


VALIDATION_MODES = ("carved", "none", "own")
"""Where a trial's checkpoint is chosen. ``carved``: the evaluation's fixed validation set, carved before any subset is
drawn (the protocol). The other two are readings of the thesis's unstated rule, run to explain its numbers, never the
study's own arms: ``none``: no carve, the whole training split is the pool and the last step is reported; ``own``:
a stratified 15% of the trial's own training set (synthetic images included) chooses the checkpoint and its loss is
reported as ``val_loss`` (the thesis's "median validation loss", read literally)."""


@dataclass(frozen=True)
class TrialSpec(TrainSettings):
    """Everything that determines one trial. Its :attr:`key` is a stable hash of the content.

    The training settings (epochs, max_steps, equal_steps, batch_size, lr, weight_decay, input_size, precision) are
    :class:`~mri_synth.training.settings.TrainSettings`' fields, declared and checked there.
    """

    arch: str = "cnn"  # a name in the model registry (cnn, resnet18, vit, or a timm model)
    real_fraction: float = 1.0  # share of the real training images, stratified
    synthetic: str = "none"  # none, repeat or a registered generator (synthetic_kinds())
    synthetic_fraction: float = 0.0  # images added, as a share of the FULL training set's size
    synthetic_classes: tuple[str, ...] = ()  # classes that receive them; empty means all
    augment: str = "none"  # a policy of augment.POLICIES
    split: str = "slice"  # the evaluation: slice (the source's split, thesis-comparable) or subject (people unseen)
    seed: int = 0  # the repeat index: the real subset (shared by every policy), the training seed, the subject fold
    pretrained: bool | None = None  # None: the registry's default for the architecture
    generator: str = ""  # the generator's label (registry): what decides its images; empty for none/repeat arms
    protocol: int = PROTOCOL  # 2: a validation set chooses checkpoints; 1: older trials chosen on test (read only)
    validation: str = "carved"  # VALIDATION_MODES: carved (the protocol), none or own (readings of the thesis)
    carry: bool = False  # start from the weights repeat seed - 1 of this spec ended with (never re-initialised)

    def __post_init__(self) -> None:
        super().__post_init__()  # the training settings
        if self.validation not in VALIDATION_MODES:
            raise ValueError(f"validation must be one of {VALIDATION_MODES}, got {self.validation!r}")
        if self.carry and self.validation != "none":
            raise ValueError("carry=True continues from the weights the previous repeat ended with, so every step "
                             "counts: use it with validation='none' (no checkpoint is chosen)")
        check_fraction(self.real_fraction, "real_fraction")
        check_mode(self.split)
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

    def key_fields(self) -> dict[str, Any]:
        """What the key hashes: every recorded field (:data:`RECORDED_FIELDS`), and a newer field where it differs
        from its default."""
        values = asdict(self)
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(self)}
        return {k: v for k, v in values.items() if k in RECORDED_FIELDS or v != defaults[k]}

    @property
    def key(self) -> str:
        """A stable hash of the spec's content (field order and Python version do not matter)."""
        return hashlib.sha256(json.dumps(self.key_fields(), sort_keys=True).encode()).hexdigest()[:16]

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
            "input_size": self.input_size, "precision": self.precision, "validation": self.validation,
            "carry": self.carry,
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
    ``train`` sets the other spec fields (the training settings, pretrained).
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
