"""One training loop for every architecture.

``fit(name_or_module, train_images, train_labels, test_images, test_labels, config)`` trains with Adam and
cross-entropy on mini-batches cut from uint8 tensors that sit on the device for the whole run; the batch is
augmented there (``augment``, an independent draw per image), resized and normalised by the model's spec, and the
model is evaluated on the fixed held-out set after every epoch (and after the last step of a step budget). It
returns the trained model and a history table with one row per evaluation. Every batch is full: batches are cut
from one permutation of the set after another, an epoch's last partial batch wrapping into the next
(``BatchStream``), so the same step budget means the same steps whatever the set size, and ``stacked`` trains K
such runs in one step with the same batches, draws and history as here.

Speed: channels-last activations and PyTorch's fused Adam kernel are on by default; bf16 autocast is on where the
hardware runs bf16 natively (CUDA, or CPUs with AVX-512 bf16 / AMX) unless the settings' ``precision`` says
otherwise (``fp32`` also turns TF32 off for the run); the basic CNN puts max-pool before ReLU
(models.py). A CPU step also runs faster when freed memory stays in the process heap instead of being page-faulted
in afresh (``heap``); that setting is process-wide, so the entry points (the CLI, the notebook batch, the
benchmark) turn it on and ``fit`` leaves it alone. ``torch.compile`` is an option (``TrainConfig.compile``), off by
default: it is meant for long CUDA runs. What each of these gains, measured and dated: ``benchmarks/README.md``.

A run is a pure function of its inputs and config, with no lasting process-wide side effect: the seed fixes the initial
weights, the batch order, every augmentation draw and any dropout, so on the CPU the same seed gives the same history
to the last digit (the wall time aside). Left to others: which images to train on (``study``), how the models are
built (``models``), what a run's settings are (``settings``), the metrics (``evaluation``) and the checkpoint
choice (``checkpoints``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mri_synth.training.augment import make_augment
from mri_synth.training.checkpoints import EvaluationLog, TrainResult
from mri_synth.training.evaluation import autocast, check_images_labels
from mri_synth.training.models import ModelSpec, create_model, get_spec
from mri_synth.training.settings import TrainConfig, precision_scope


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


def resolve_model(model_name_or_module: str | nn.Module, spec: ModelSpec | None, pretrained: bool | None,
                   weights_path: Any, input_size: int = 0) -> tuple[nn.Module, ModelSpec]:
    if isinstance(model_name_or_module, str):
        if spec is None:
            spec = get_spec(model_name_or_module)
            spec = spec.with_input_size(input_size) if input_size else spec
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
    check_images_labels(train_images, train_labels, "training")
    check_images_labels(test_images, test_labels, "held-out")
    if validation is not None:
        check_images_labels(*validation, "validation")
    device = config.resolved_device()
    bf16 = config.use_bf16(device)
    channels_last = True if config.channels_last is None else config.channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), precision_scope(config.precision):
        # The global generators (initial weights, dropout) are seeded inside a fork, so the caller's are untouched.
        torch.manual_seed(config.seed)
        model, spec = resolve_model(model_name_or_module, spec, pretrained, weights_path, config.input_size)
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
            with autocast(device, bf16):
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
                bar.set_postfix({k: f"{row[k]:.4f}" for k in ("test_loss", "val_loss", "accuracy") if k in row})
                if log.stopped_early:
                    break
        bar.close()
        steps_done = int(next(iter(optimizer.state.values()))["step"]) if optimizer.state else 0
    return log.result(model, spec, config, optimizer_steps=steps_done)
