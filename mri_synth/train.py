"""One training loop for every architecture, and the evaluation metrics of the study.

``fit(name_or_module, train_images, train_labels, test_images, test_labels, config)`` trains with Adam and
cross-entropy on mini-batches cut from uint8 tensors that sit on the device for the whole run; the batch is
augmented there (``augment``, an independent draw per image), resized and normalised by the model's spec, and the
model is evaluated on the fixed held-out set after every epoch (and after the last step of a step budget). It
returns the trained model and a history table with one row per evaluation. Every batch is full: batches are cut
from one permutation of the set after another, an epoch's last partial batch wrapping into the next
(``BatchStream``), so the same step budget means the same steps whatever the set size, and ``stacked`` trains K
such runs in one step with the same batches, draws and history as here.

Speed: channels-last activations and PyTorch's fused Adam kernel are on by default; bf16 autocast is on where the
hardware runs bf16 natively (CUDA, or CPUs with AVX-512 bf16 / AMX); the basic CNN puts max-pool before ReLU
(models.py). A CPU step also runs faster when freed memory stays in the process heap instead of being page-faulted
in afresh (``heap``); that setting is process-wide, so the entry points (the CLI, the notebook batch, the
benchmark) turn it on and ``fit`` leaves it alone. ``torch.compile`` is an option (``TrainConfig.compile``), off by
default: it is meant for long CUDA runs. What each of these gains, measured and dated: ``benchmarks/README.md``.

A run is a pure function of its inputs and config, with no process-wide side effect: the seed fixes the initial
weights, the batch order, every augmentation draw and any dropout, so on the CPU the same seed gives the same history
to the last digit (the wall time aside). Left to others: which images to train on (``study``), how the models are
built (``models``).
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mri_synth.augment import POLICIES, make_augment
from mri_synth.checkpoints import EvaluationLog  # noqa: F401  (``stacked`` and callers import it from here too)
from mri_synth.constants import CLASS_NAMES, NUM_CLASSES
from mri_synth.models import ModelSpec, create_model, get_spec

LR_SCHEDULES = ("cosine",)
ECE_BINS = 15  # the usual equal-width binning of confidence (Guo et al. 2017)


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. Defaults follow the thesis: plain Adam, lr 1e-3, 10 epochs, no extras.

    Attributes:
        epochs: Passes over the training images.
        max_steps: A budget in optimizer steps; when set it overrides ``epochs`` (evaluation still happens at
            every epoch end, and after the last step).
        batch_size: Images per optimizer step. Every batch is full: an epoch's last partial batch wraps around
            into the next epoch's permutation (``BatchStream``), so ``epochs`` is ``ceil(epochs * N / batch_size)``
            steps.
        lr: Adam's learning rate.
        weight_decay: Adam's (L2) weight decay; 0 as in the thesis.
        augment: Augmentation policy name (``augment.POLICIES``), applied to every training batch.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: Fixes weights, batch order, augmentation draws and dropout.
        early_stopping_patience: Stop after this many evaluations without a lower held-out loss, and return the
            best weights; ``None`` (default) trains the whole budget.
        lr_schedule: ``None`` (constant lr) or ``"cosine"`` (cosine decay to 0 over the step budget).
        compile: Wrap the model in ``torch.compile`` (pays off on CUDA for long runs).
        progress: Show a tqdm progress bar (off for batch runs).
        bf16: bf16 autocast; ``None`` means ``default_bf16(device)``: on for CUDA and CPUs with native bf16.
        channels_last: Channels-last memory format; ``None`` means on.
        eval_batch_size: Images per forward pass during evaluation.
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    augment: str = "none"
    device: str = "auto"
    seed: int = 0
    early_stopping_patience: int | None = None
    lr_schedule: str | None = None
    compile: bool = False
    progress: bool = True
    bf16: bool | None = None
    channels_last: bool | None = None
    eval_batch_size: int = 64  # on the CPU 64 evaluates ~2x faster than 256 (a batch's activations stay in cache)
    eval_every: int | None = None  # evaluate every this many steps (and after the last); None: at each epoch's end

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")

        positive_int("epochs", self.epochs)
        positive_int("max_steps", self.max_steps, allow_none=True)
        positive_int("batch_size", self.batch_size)
        positive_int("eval_batch_size", self.eval_batch_size)
        positive_int("eval_every", self.eval_every, allow_none=True)
        positive_int("early_stopping_patience", self.early_stopping_patience, allow_none=True)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ValueError(f"TrainConfig.lr must be in (0, 1), got {self.lr!r}; the thesis used 1e-3")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.augment not in POLICIES:
            raise ValueError(f"TrainConfig.augment {self.augment!r} is not a policy; choose one of {', '.join(POLICIES)}")
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


@dataclass
class TrainResult:
    """A trained model and its history: one row per evaluation on the held-out set.

    History columns: epoch, step, train_loss (mean over the steps since the previous row), test_loss,
    accuracy, balanced_accuracy, macro_f1, recall_<ClassName> (x4), ece, wall_time_s (since training began).
    """

    model: nn.Module
    history: pd.DataFrame
    spec: ModelSpec | None = None
    config: TrainConfig | None = None
    stopped_early: bool = False
    best_epoch: int | None = field(default=None)
    best_step: int | None = None  # the chosen checkpoint's step (the last step when nothing chose one)
    test_proba_best: torch.Tensor | None = None  # [M, 4] held-out probabilities at the chosen checkpoint
    test_proba_last: torch.Tensor | None = None  # ... and at the last evaluation
    optimizer_steps: int | None = None  # updates made, read from the optimizer's own state


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


def _autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _check_images_labels(images: torch.Tensor, labels: torch.Tensor | None, what: str) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"{what} images must be uint8 [N, 1, H, W], got {images.dtype} {tuple(images.shape)}; "
                         "pass Split.images from mri_synth.data.load_data")
    if len(images) == 0:
        raise ValueError(f"{what} images are empty; pass at least one image")
    if labels is None:
        return
    if labels.dtype != torch.int64 or labels.shape != (len(images),):
        raise ValueError(f"{what} labels must be int64 [{len(images)}], got {labels.dtype} {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{what} labels must lie in 0..{NUM_CLASSES - 1} (class ids of {CLASS_NAMES})")


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, spec: ModelSpec, *, batch_size: int = 64,
                  device: torch.device | str | None = None, bf16: bool | None = None) -> torch.Tensor:
    """Class probabilities ``[N, 4]`` (float32, on the CPU) of uint8 images ``[N, 1, H, W]``.

    ``device`` defaults to the model's; ``bf16`` (autocast) defaults to ``default_bf16(device)``, as in ``fit``.
    """
    _check_images_labels(images, None, "predict_proba")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = spec.prepare(images[start:start + batch_size].to(device, non_blocking=True))
            with _autocast(device, default_bf16(device) if bf16 is None else bf16):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            out.append(logits.float().softmax(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def metrics_from_proba(proba: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy, balanced accuracy, macro-F1, per-class recall and ECE of predicted probabilities.

    Classes absent from ``labels`` get a NaN recall and are left out of the balanced accuracy; macro-F1 averages
    over the classes present in the labels or the predictions (as scikit-learn does).
    """
    labels = labels.cpu()
    proba = proba.cpu().float()
    predicted = proba.argmax(dim=1)
    confusion = torch.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2).view(NUM_CLASSES, -1)
    support, predicted_count, correct = confusion.sum(1), confusion.sum(0), confusion.diag()
    recall = correct / support.clamp(min=1)
    precision = correct / predicted_count.clamp(min=1)
    f1 = torch.where(correct > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    present = support > 0
    confidence, hit = proba.max(dim=1).values, (predicted == labels).float()
    bins = (confidence * ECE_BINS).long().clamp(max=ECE_BINS - 1)
    gap = torch.zeros(ECE_BINS).index_add_(0, bins, hit - confidence).abs()
    result = {
        "loss": F.nll_loss(proba.clamp(min=1e-12).log(), labels).item(),
        "accuracy": hit.mean().item(),
        "balanced_accuracy": recall[present].mean().item(),
        "macro_f1": f1[present | (predicted_count > 0)].mean().item(),
    }
    for name, value, ok in zip(CLASS_NAMES, recall.tolist(), present.tolist()):
        result[f"recall_{name}"] = value if ok else math.nan
    result["ece"] = (gap.sum() / len(labels)).item()
    return result


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: ModelSpec, *,
             batch_size: int = 64, device: torch.device | str | None = None,
             bf16: bool | None = None) -> dict[str, float]:
    """Metrics of a model on a labelled set (see ``metrics_from_proba``; the cross-entropy is ``"loss"``)."""
    _check_images_labels(images, labels, "evaluate")
    return metrics_from_proba(predict_proba(model, images, spec, batch_size=batch_size, device=device, bf16=bf16),
                              labels)


def step_budget(config: TrainConfig, num_images: int) -> int:
    """Optimizer steps of a run: ``config.max_steps``, or enough full batches for ``config.epochs`` passes."""
    return config.max_steps or math.ceil(config.epochs * num_images / config.batch_size)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """The learning-rate schedule of ``config`` over ``total_steps`` (``None`` for a constant rate)."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


class BatchStream:
    """Batch order of one run: full batches of one size cut from one random permutation after another.

    An epoch's last partial batch is filled from the next permutation (it wraps around), so every step sees
    ``batch_size`` images and the number of steps depends only on the budget, not on the set size: this is what
    lets models with training sets of different sizes share a step (``stacked``). A set smaller than a batch
    spans several permutations per batch. Permutations come from ``generator`` when the stream needs them, in
    the middle of a run's sequence of augmentation draws, so a run consumes its generator in a fixed order.
    """

    def __init__(self, num_images: int, batch_size: int, generator: torch.Generator) -> None:
        self.num_images, self.batch_size, self.generator = num_images, batch_size, generator
        self.epochs_done = 0  # complete passes over the set
        self._order, self._position, self._last_ended = torch.empty(0, dtype=torch.long), 0, 0

    def next(self) -> tuple[torch.Tensor, int]:
        """The next batch's indices (int64 ``[batch_size]``, CPU) and how many epochs ended within it."""
        parts, needed, ended = [], self.batch_size, 0
        while needed:
            if self._position == len(self._order):
                self._order, self._position = torch.randperm(self.num_images, generator=self.generator), 0
            take = min(needed, self.num_images - self._position)
            parts.append(self._order[self._position:self._position + take])
            self._position += take
            needed -= take
            if self._position == self.num_images:
                ended += 1
        self.epochs_done += ended
        self._last_ended = ended
        return (parts[0] if len(parts) == 1 else torch.cat(parts)), ended

    def epoch_label(self) -> int:
        """The history's epoch of the last batch: the epoch it completed, else the epoch it is part of."""
        return self.epochs_done if self._last_ended else self.epochs_done + 1


def _resolve_model(model_name_or_module: str | nn.Module, spec: ModelSpec | None, pretrained: bool | None,
                   weights_path: Any) -> tuple[nn.Module, ModelSpec]:
    if isinstance(model_name_or_module, str):
        spec = spec or get_spec(model_name_or_module)
        return create_model(model_name_or_module, pretrained=pretrained, weights_path=weights_path, spec=spec), spec
    if spec is None:
        raise ValueError("fit() was given a module without a spec: pass spec=get_spec(<name>) so the images can be "
                         "resized and normalised for it")
    # A copy, so that fit() never changes the caller's module and stays a pure function of its inputs.
    return copy.deepcopy(model_name_or_module), spec


def fit(model_name_or_module: str | nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor,
        test_images: torch.Tensor, test_labels: torch.Tensor, config: TrainConfig = TrainConfig(), *,
        spec: ModelSpec | None = None, pretrained: bool | None = None, weights_path: Any = None,
        validation: tuple[torch.Tensor, torch.Tensor] | None = None, selection: str = "val_loss") -> TrainResult:
    """Train a model on uint8 images and evaluate it after every epoch (or every ``config.eval_every`` steps).

    Args:
        model_name_or_module: A registry/timm name (built here, seeded by ``config.seed``) or a module (copied).
        train_images: uint8 ``[N, 1, H, W]``, any device (moved to the training device once).
        train_labels: int64 ``[N]`` class ids.
        test_images: uint8 ``[M, 1, H, W]``, the fixed held-out set.
        test_labels: int64 ``[M]``.
        config: How to train (see ``TrainConfig``).
        spec: The model's spec; required with a module, defaults to ``get_spec(name)`` with a name.
        pretrained: Passed to ``create_model`` (``None``: the registry's default).
        weights_path: A local pretrained weights file, passed to ``create_model``.
        validation: ``(images, labels)`` that choose the checkpoint by ``selection`` (``checkpoints``); the
            held-out set is then only reported, never compared.
        selection: ``val_loss`` or ``val_dementia_auc``.

    Returns:
        The trained model (the chosen checkpoint with a validation set or early stopping, else the last) and its
        history, with the held-out probabilities at the chosen checkpoint and the last step.
    """
    _check_images_labels(train_images, train_labels, "training")
    _check_images_labels(test_images, test_labels, "held-out")
    if validation is not None:
        _check_images_labels(*validation, "validation")
    device = config.resolved_device()
    bf16 = default_bf16(device) if config.bf16 is None else config.bf16
    channels_last = True if config.channels_last is None else config.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        # The global generators (initial weights, dropout) are seeded inside a fork, so the caller's are untouched.
        torch.manual_seed(config.seed)
        model, spec = _resolve_model(model_name_or_module, spec, pretrained, weights_path)
        model = model.to(device=device, memory_format=memory_format).train()
        step_model = torch.compile(model) if config.compile else model
        generator = torch.Generator().manual_seed(config.seed)  # batch order and augmentation draws
        augment = make_augment(config.augment)
        x_train, y_train = train_images.to(device), train_labels.to(device)
        x_test = test_images.to(device)  # once, not at every evaluation

        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                     fused=True)  # one pass over the weights instead of ~10: 3x faster on the CPU
        total_steps = step_budget(config, len(x_train))
        scheduler = make_scheduler(optimizer, config, total_steps)
        batches = BatchStream(len(x_train), config.batch_size, generator)
        log = EvaluationLog(x_test, test_labels, spec, config, device, bf16, validation=validation,
                            selection=selection)
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(total=total_steps, disable=not config.progress, desc=f"{spec.name} training", unit="step")
        for step in range(1, total_steps + 1):
            index, epoch_ended = batches.next()
            index = index.to(device)
            x = spec.prepare(augment(x_train[index], generator)).contiguous(memory_format=memory_format)
            with _autocast(device, bf16):
                loss = F.cross_entropy(step_model(x).float(), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach()  # no host sync per step
            bar.update(1)
            due = (step % config.eval_every == 0) if config.eval_every else epoch_ended
            if due or step == total_steps:
                row = log.record(model, batches.epoch_label(), step, loss_sum)
                model.train()
                loss_sum = torch.zeros((), device=device)
                bar.set_postfix(test_loss=f"{row['test_loss']:.4f}", accuracy=f"{row['accuracy']:.3f}")
                if log.stopped_early:
                    break
        bar.close()
        steps_done = int(next(iter(optimizer.state.values()))["step"]) if optimizer.state else 0
    return log.result(model, spec, config, optimizer_steps=steps_done)
