"""The classifier's training settings, declared once: what a trial, a notebook and the command line all carry.

:class:`TrainSettings` holds what decides how a classifier learns (learning rate, weight decay, the budget in epochs
or optimizer steps, batch size, input size, arithmetic precision), with its defaults stated here and nowhere else.
The trial spec (``study.trials.TrialSpec``), the notebooks' configs (``chapters.training.ArchitectureStudy`` and
the Grad-CAM chapter's) and :class:`TrainConfig` (what ``fit`` takes) derive from it, and the command line builds its
flags from its fields (:func:`add_arguments`), so a new setting is one field here.

:class:`TrainConfig` adds how one run goes (augmentation policy, device, seed, early stopping, schedule, progress);
which images to train on is the study's business, how models are built the registry's (``training.models``).
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Iterator

import torch

from mri_synth.training.augment import POLICIES

PRECISIONS = ("auto", "fp32", "bf16")
"""Classifier arithmetic: ``auto`` = bf16 autocast where the hardware runs it natively (CUDA, CPUs with AVX-512 bf16
or AMX), else fp32; ``fp32`` = no autocast and no TF32 (results that pair across machines); ``bf16`` = autocast."""

LR_SCHEDULES = ("cosine",)


def _positive_int(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TrainSettings:
    """How a classifier is trained, declared once. Defaults follow the thesis: Adam at lr 1e-3, 10 epochs, batch 64.

    Attributes:
        epochs: Passes over the training images; with ``equal_steps``, passes over the 100% pool for every arm.
        max_steps: A budget in optimizer steps, the same for every arm; overrides ``epochs``.
        equal_steps: Every arm trains ``epochs x ceil(100% pool / batch_size)`` steps (the fair comparison); the
            study resolves it into ``max_steps`` before ``fit`` sees it.
        batch_size: Images per optimizer step.
        lr: Adam's learning rate.
        weight_decay: Adam's (L2) weight decay; 0 as in the thesis.
        input_size: Model input side in pixels; 0 means the registry's (128 for the CNN, 224 for pretrained models).
        precision: ``auto``, ``fp32`` or ``bf16`` (:data:`PRECISIONS`).
        held_out_curve: Predict the held-out (test) set at every evaluation, for its learning curve; ``False``: only
            at the checkpoint validation chose and at the last step, the two the study reports (same weights, same
            numbers), which saves a third of a 30% arm's evaluations (``benchmarks/arch_trial_cost.py``).
    """

    epochs: int = 10  # the thesis's budget
    max_steps: int | None = None  # None (or 0): the budget is epochs
    equal_steps: bool = False  # False: the thesis's epochs of each arm's own set
    batch_size: int = 64  # fills a CPU's caches; the thesis did not say
    lr: float = 1e-3  # Adam's default, and the thesis's
    weight_decay: float = 0.0  # the thesis used none
    input_size: int = 0  # 0: the model's own size (registry)
    precision: str = "auto"  # bf16 where native; fp32 pairs trials across machines
    held_out_curve: bool = True  # False: the test set only at the chosen checkpoint and the last step

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if self.max_steps == 0 and not isinstance(self.max_steps, bool):  # a notebook's literal for "no step budget"
            object.__setattr__(self, "max_steps", None)
        _positive_int(owner, "epochs", self.epochs)
        _positive_int(owner, "max_steps", self.max_steps, allow_none=True)
        _positive_int(owner, "batch_size", self.batch_size)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"{owner}.lr must be in (0, 1), got {self.lr!r}; the thesis used 1e-3")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"{owner}.weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 0:
            raise ValueError(f"{owner}.input_size must be 0 (the model's own) or a positive size, got "
                             f"{self.input_size!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"{owner}.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.held_out_curve, bool):
            raise ValueError(f"{owner}.held_out_curve must be true or false, got {self.held_out_curve!r}")
        if self.equal_steps and self.max_steps:
            raise ValueError("set either max_steps (a budget in steps) or equal_steps (epochs of the 100% pool), "
                             "not both")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' field names (what every carrier of the settings shares)."""
        return tuple(f.name for f in fields(TrainSettings))

    @classmethod
    def of(cls, carrier: Any) -> "TrainSettings":
        """The settings a carrier holds (a trial spec, a notebook config, parsed arguments, a ``TrainConfig``)."""
        return TrainSettings(**{name: getattr(carrier, name) for name in cls.names()})

    @property
    def training(self) -> "TrainSettings":
        """These settings alone (a carrier's, without the fields it adds)."""
        return TrainSettings.of(self)

    def use_bf16(self, device: torch.device) -> bool:
        """Whether to autocast to bf16 on ``device`` under this precision."""
        return {"fp32": False, "bf16": True}.get(self.precision, default_bf16(device))


def default_bf16(device: torch.device) -> bool:
    """bf16 autocast where the hardware runs it natively: CUDA, or a CPU with AVX-512 bf16 or AMX.

    Elsewhere (e.g. an AVX2 laptop) bf16 is emulated and slower than fp32, so the default there is fp32.
    """
    if device.type == "cuda":
        return True
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers; if a torch release drops them, stay on the safe side
        return False


@contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Inside: TF32 matrix products off under ``fp32`` (CUDA would otherwise use them), as they were otherwise.

    bf16 autocast itself is chosen per run (:meth:`TrainSettings.use_bf16`); TF32 is a process-wide switch, so it is
    set here and restored on exit.
    """
    if precision != "fp32":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """How one model is trained: the settings, plus what belongs to one run.

    Attributes (beside :class:`TrainSettings`'s):
        augment: Augmentation policy name (``training.augment.POLICIES``), applied to every training batch.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: Fixes weights, batch order, augmentation draws and dropout.
        early_stopping_patience: Stop after this many evaluations without a better criterion and return the best
            weights; ``None`` trains the whole budget.
        lr_schedule: ``None`` (constant lr) or ``"cosine"`` (cosine decay to 0 over the step budget).
        compile: Wrap the model in ``torch.compile`` (pays off on CUDA for long runs).
        progress: Show a tqdm progress bar (off for batch runs).
        channels_last: Channels-last memory format; ``None`` means on.
        eval_batch_size: Images per forward pass during evaluation.
        eval_every: Evaluate every this many steps (and after the last); ``None``: at each epoch's end.

    Every batch is full: an epoch's last partial batch wraps around into the next epoch's permutation
    (``fit.BatchStream``), so ``epochs`` is ``ceil(epochs * N / batch_size)`` steps.
    """

    augment: str = "none"
    device: str = "auto"
    seed: int = 0
    early_stopping_patience: int | None = None
    lr_schedule: str | None = None
    compile: bool = False
    progress: bool = True
    channels_last: bool | None = None
    eval_batch_size: int = 64  # on the CPU 64 evaluates ~2x faster than 256 (a batch's activations stay in cache)
    eval_every: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("TrainConfig", "eval_batch_size", self.eval_batch_size)
        _positive_int("TrainConfig", "eval_every", self.eval_every, allow_none=True)
        _positive_int("TrainConfig", "early_stopping_patience", self.early_stopping_patience, allow_none=True)
        if self.augment not in POLICIES:
            raise ValueError(f"TrainConfig.augment {self.augment!r} is not a policy; choose one of "
                             f"{', '.join(POLICIES)}")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule {self.lr_schedule!r}: use None or one of {LR_SCHEDULES}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"TrainConfig.seed must be an integer, got {self.seed!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"TrainConfig.device {self.device!r} is not a device; use 'auto', 'cpu' or "
                                 "'cuda'") from error

    def resolved_device(self) -> torch.device:
        """The device this config trains on (``"auto"`` resolved)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"TrainConfig.device is {self.device!r} but CUDA is not available; use 'auto' or 'cpu'")
        return device


_HELP = {
    "epochs": "training budget in epochs (with --equal-steps: epochs of the 100%% pool for every arm)",
    "max_steps": "training budget in optimizer steps, the same for every arm (overrides --epochs)",
    "equal_steps": "every arm trains epochs x ceil(100%% pool / batch size) optimizer steps: arms differ in images, "
                   "not in gradient steps",
    "batch_size": "images per optimizer step",
    "lr": "Adam's learning rate",
    "weight_decay": "Adam's weight decay (the thesis used none)",
    "input_size": "model input side in pixels (0: the model's own; 224 for the pretrained models)",
    "precision": "classifier arithmetic: auto = bf16 autocast where native (CUDA, AVX-512 bf16 CPUs); fp32 = no "
                 "autocast and no TF32 (trials that pair across machines); bf16 = autocast",
    "held_out_curve": "predict the test set at every evaluation (its learning curve); --no-held-out-curve: only at "
                      "the checkpoint validation chose and at the last step (the reported numbers, fewer evaluations)",
}


def add_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """The settings as command-line flags (``--lr``, ``--batch-size``, ...), defaults from :class:`TrainSettings`
    unless ``defaults`` names others; :meth:`TrainSettings.of` reads them back from the parsed arguments."""
    base = TrainSettings()
    for f in fields(TrainSettings):
        default = defaults.get(f.name, getattr(base, f.name))
        flag = "--" + f.name.replace("_", "-")
        if f.name == "equal_steps":
            parser.add_argument(flag, action="store_true", default=default, help=_HELP[f.name])
        elif f.name == "held_out_curve":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=_HELP[f.name])
        elif f.name == "precision":
            parser.add_argument(flag, choices=PRECISIONS, default=default, help=_HELP[f.name])
        else:
            kind = float if f.name in ("lr", "weight_decay") else int
            parser.add_argument(flag, type=kind, default=default, help=_HELP[f.name] + f" (default {default})")
