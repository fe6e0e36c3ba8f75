"""Stacked training: K models of one architecture trained together, one optimizer step for all of them.

A study is thousands of small, independent trainings, and one basic CNN at batch 64 leaves a GPU almost idle.
Here the K models' weights are stacked along a new leading dimension (``torch.func.stack_module_state``), one
forward pass runs all of them on their own batches (``torch.vmap`` over ``torch.func.functional_call``), one
backward pass gets every model's gradient (the loss is the sum of the K models' own losses, and no weight is
shared, so model k's gradient is that of its own loss), and one ``torch.optim.Adam`` steps the stacked tensors.
Adam is element-wise (its moments, bias corrections and L2 weight decay never mix elements), so one Adam over the
stacked tensors is K independent Adams, update for update; a cosine schedule is the same for all K because every
model takes the same number of steps.

Each model keeps what makes it its own trial: its training set (sets may differ in size), its seed (initial
weights, batch order, augmentation draws), its augmentation policy, its batch order (``train.BatchStream``: full
batches, an epoch's last partial batch wrapping into the next permutation), its evaluation on the held-out set at
its own epoch ends and after the last step, its early stopping and its history (``train.EvaluationLog``, the
same table ``train.fit`` writes). So in fp32 each stacked model's history equals that of the same trial trained
alone by ``train.fit``, up to floating-point rounding: vmap runs the K models' layers as batched (grouped)
kernels, which sum in another order. ``tests/training/test_stacked.py`` states and checks the tolerance, and shows in
float64 that one stacked step is each model's lone step (gradients to 1e-12, batch-norm buffers bit for bit).

What cannot be kept exactly, and is refused with ``StackingError``:
- dropout or stochastic depth with a non-zero rate: under vmap the K models would share or redraw the global
  random stream, so no model would see the masks its own run draws (none of the registry's models use them);
- different step budgets: models only share a step when their budgets are equal (``TrainConfig.max_steps``);
- training images of different sizes (resize them first), and ``TrainConfig.compile``.

Batch norm (ResNet-18) is kept exactly: the running mean, variance and batch count are stacked buffers that the
batched batch-norm kernel updates in place, model by model, as in a lone run. Its histories
agree less tightly than the CNN's over many steps only because a from-scratch ResNet amplifies rounding faster.
The ViT is kept exactly with timm's attention written out (the fused kernel has no batching rule). Evaluation
loads one model at a time into a module and calls ``train.evaluate``, at that model's own epoch ends.

Where it pays: on a GPU, where one small CNN leaves the device idle between kernel launches. On the 2-core
development CPU it does not (``benchmarks/stacked_throughput.py``: 0.28-0.33x of ``fit`` one at a time, bf16):
vmap's batching rules fold the model dimension into the channels (convolution becomes a grouped convolution) or
the batch (pooling) with reshapes that leave activations in NCHW, while ``fit`` runs channels-last, where
PyTorch's CPU max-pool and convolution are several times faster; against ``fit`` in NCHW the stack is still
0.76-0.81x, as this CNN's CPU step is compute-bound and there is no idle hardware to fill. So: stack on CUDA,
train one at a time on the CPU. Memory: the K training sets sit end to end on the device (16 KiB per 128 px
slice: 128 trials of 5,120 slices are 10.7 GB).
Left to others: which trials can share a step (``study``), the models (``models``), the metrics (``train``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from mri_synth.training.augment import make_augment
from mri_synth.training.checkpoints import EvaluationLog, TrainResult
from mri_synth.training.evaluation import autocast, check_images_labels
from mri_synth.training.fit import BatchStream, make_scheduler, resolve_model, step_budget
from mri_synth.training.models import ModelSpec
from mri_synth.training.settings import TrainConfig, precision_scope


class StackingError(ValueError):
    """The trials or the model cannot be trained stacked with the semantics of separate runs."""


@dataclass(frozen=True, eq=False)  # tensors inside: compared by identity
class StackedTrial:
    """What makes one stacked model its own trial.

    Attributes:
        train_images: uint8 ``[N, 1, H, W]``; N may differ between the trials of a stack.
        train_labels: int64 ``[N]`` class ids.
        seed: Initial weights, batch order and augmentation draws (``TrainConfig.seed`` of the lone run).
        augment: Augmentation policy name (``augment.POLICIES``), as ``TrainConfig.augment``.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    seed: int = 0
    augment: str = "none"


def trial_config(config: TrainConfig, trial: StackedTrial) -> TrainConfig:
    """The ``TrainConfig`` that trains ``trial`` alone through ``train.fit`` as it is trained in a stack."""
    return replace(config, seed=trial.seed, augment=trial.augment)


def check_stackable(model: nn.Module) -> None:
    """Raise ``StackingError`` if a model's training step cannot be vmapped with a lone run's semantics.

    Dropout (any ``nn.Dropout*`` or timm ``DropPath``/``drop_path`` rate above 0) draws from the global random
    stream inside the forward pass; stacked, no model would see the masks its own run draws.
    """
    for name, module in model.named_modules():
        rate = getattr(module, "p", None) if isinstance(module, nn.modules.dropout._DropoutNd) else None
        rate = rate if rate is not None else getattr(module, "drop_prob", None)
        if rate:
            raise StackingError(
                f"module {name!r} ({type(module).__name__}) drops activations at rate {rate}: its random masks "
                "cannot match a lone run's under vmap. Build the model with drop rates of 0 (e.g. timm's "
                "drop_rate=0, drop_path_rate=0) or train these trials one at a time with train.fit")


INDEX_LIMIT = 2**31 - 1
"""The most elements one tensor may hold in CUDA's 32-bit-indexed kernels (convolution among them)."""


def vmap_chunk(model: nn.Module, input_size: int, batch_size: int, k: int, device: torch.device) -> int | None:
    """How many models one vmapped call may hold, or ``None`` for all ``k`` at once.

    vmap folds the model dimension into a layer's batch or channels, so K models on batches of B images make
    tensors K x B times one image's largest activation; past ``INDEX_LIMIT`` elements CUDA's convolutions refuse
    them ("canUse32BitIndexMath"). The largest activation is read off one image through forward hooks.
    """
    largest = [input_size * input_size]
    hooks = [m.register_forward_hook(lambda _m, _i, out: largest.append(out.numel()) if torch.is_tensor(out) else None)
             for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, input_size, input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    chunk = max(1, INDEX_LIMIT // (batch_size * max(largest)))
    return None if chunk >= k else chunk


def stacked_loss(model: nn.Module, chunk_size: int | None = None) -> Callable[..., torch.Tensor]:
    """The training loss of K models of ``model``'s architecture, vmapped over the stacked weights.

    ``chunk_size`` (see ``vmap_chunk``) runs the models in groups of that many, one after another.

    Returns:
        ``losses(params, buffers, x, y) -> [K]``: ``params`` and ``buffers`` as ``stack_module_state`` returns
        them, ``x`` ``[K, B, C, S, S]``, ``y`` int64 ``[K, B]``; model k's cross-entropy on its own batch. Batch-norm
        running statistics in ``buffers`` are updated in place, each model's from its own batch.
    """
    base = copy.deepcopy(model).to("meta")  # the architecture; weights come from the stacks
    for module in base.modules():
        if getattr(module, "fused_attn", False):
            # timm's attention written out (q k^T, softmax, v): vmap batches it into K-wide matmuls, while the fused
            # kernel has no batching rule and would run once per model. The same function; rounding differs.
            module.fused_attn = False

    def loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(base, (params, buffers), (x,))
        return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), y)  # as fit: bf16 -> fp32

    return torch.vmap(loss, chunk_size=chunk_size)


def check_trials(trials: Sequence[StackedTrial], config: TrainConfig) -> int:
    """The steps every trial of a stack takes; ``StackingError`` if the trials cannot share a step.

    A runner can call it to group pending trials: trials of one architecture share a step when their images
    have one size and ``config`` gives them the same step budget (always, with ``max_steps``).
    """
    if not trials:
        raise StackingError("no trials to stack: pass at least one StackedTrial")
    for i, trial in enumerate(trials):
        if not isinstance(trial, StackedTrial):
            raise StackingError(f"trial {i} is a {type(trial).__name__}, not a StackedTrial")
        check_images_labels(trial.train_images, trial.train_labels, f"trial {i} training")
        trial_config(config, trial)  # TrainConfig checks the seed and the policy name
    if config.compile:
        raise StackingError("TrainConfig.compile is not supported in stacked training; set compile=False")
    sizes = {tuple(t.train_images.shape[-2:]) for t in trials}
    if len(sizes) > 1:
        raise StackingError(f"stacked trials' images differ in size ({sorted(sizes)}); resize them to one size first")
    budgets = [step_budget(config, len(t.train_images)) for t in trials]
    if len(set(budgets)) > 1:
        sizes = [len(t.train_images) for t in trials]
        raise StackingError(
            f"stacked models must take the same number of steps, but {config.epochs} epochs of batch "
            f"{config.batch_size} over sets of {sizes} images are {budgets} steps; set TrainConfig.max_steps "
            "(an equal-step budget) or stack trials whose sets have the same size")
    return budgets[0]


def _load_model(module: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                k: int) -> nn.Module:
    """Copy stacked model ``k``'s weights and buffers into ``module`` (same architecture); return it."""
    with torch.no_grad():
        for name, value in module.named_parameters():
            value.copy_(params[name][k])
        for name, value in module.named_buffers():
            value.copy_(buffers[name][k])
    return module


def _concat_plans(plans: list[Any]) -> Any:
    """One augmentation plan for all images from per-model plans of one policy (same nesting of CPU tensors)."""
    if isinstance(plans[0], torch.Tensor):
        return torch.cat(plans)
    return type(plans[0])(_concat_plans(list(parts)) for parts in zip(*plans))


def _batches(streams: list[BatchStream], generators: list[torch.Generator], augments: list[Any],
             images: torch.Tensor, labels: torch.Tensor, offsets: list[int], spec: ModelSpec,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every model's next batch, augmented with its own draws: ``[K, B, 1, S, S]``, ``[K, B]``, epochs ended.

    ``images`` and ``labels`` are the K training sets end to end (model k's from ``offsets[k]``), so the K
    batches are one gather. Each model draws its batch order and its augmentation plan from its own generator,
    in the order ``fit`` does (batch, then plan); the plans of one policy are then applied in one call to the
    K batches together, which transforms each image by its own draw exactly as K separate calls would.
    """
    indices, ended, plans = [], [], []
    for stream, generator, augment, offset in zip(streams, generators, augments, offsets):
        index, epochs = stream.next()
        indices.append(index + offset)
        ended.append(epochs)
        draw = getattr(augment, "draw", None)
        plans.append(draw(len(index), *images.shape[-2:], generator) if draw is not None else None)
    k, batch = len(indices), len(indices[0])
    index = torch.cat(indices).to(device, non_blocking=True)
    x, y = images[index], labels[index].view(k, batch)
    groups: dict[str, list[int]] = {}
    for i, augment in enumerate(augments):
        groups.setdefault(getattr(augment, "policy", "none"), []).append(i)
    for policy, members in groups.items():
        augment = augments[members[0]]
        if policy == "none":
            continue
        if plans[members[0]] is None:  # an augmentation without a draw/apply split: one call per model
            for i in members:
                x[i * batch:(i + 1) * batch] = augments[i](x[i * batch:(i + 1) * batch], generators[i])
            continue
        plan = _concat_plans([plans[i] for i in members])
        if len(members) == k:
            x = augment.apply(x, plan)
        else:
            rows = torch.cat([torch.arange(i * batch, (i + 1) * batch) for i in members]).to(device)
            x[rows] = augment.apply(x[rows], plan)
    x = spec.prepare(x)  # per image: resizing and normalising all K batches at once changes nothing
    return x.view(k, batch, *x.shape[1:]), y, ended


def fit_stacked(arch: str, trials: Sequence[StackedTrial], test_images: torch.Tensor, test_labels: torch.Tensor,
                config: TrainConfig = TrainConfig(), *, spec: ModelSpec | None = None, pretrained: bool | None = None,
                weights_path: Any = None, validation: tuple[torch.Tensor, torch.Tensor] | None = None,
                selection: str = "val_loss") -> list[TrainResult]:
    """Train one model per trial, all in one step, and evaluate each as ``train.fit`` would.

    Args:
        arch: A registry/timm name; each model is built from it under its trial's seed, as ``fit`` builds it.
        trials: One ``StackedTrial`` per model: training set, seed, augmentation policy.
        test_images: uint8 ``[M, 1, H, W]``, the held-out set every model is evaluated on.
        test_labels: int64 ``[M]``.
        config: Shared settings (batch size, lr, budget, schedule, device, bf16, early stopping); its ``seed``
            and ``augment`` are replaced by each trial's. The budget must give every trial the same steps.
        spec: The model's spec (default ``get_spec(arch)``).
        pretrained: Passed to ``models.create_model`` (``None``: the registry's default).
        weights_path: A local pretrained weights file.
        validation: ``(images, labels)`` that choose each model's checkpoint by ``selection``, as in ``fit``.
        selection: ``val_loss`` or ``val_dementia_auc`` (``checkpoints.SELECTIONS``).

    Returns:
        One ``TrainResult`` per trial, in order, as ``fit`` returns it: the model (the chosen checkpoint), its
        history, its held-out probabilities at the chosen and the last step, its optimizer steps (a model that
        stopped early counts the steps up to its stop, as its lone run does) and
        ``config=trial_config(config, trial)``, the config that trains it alone through ``fit``.

    Raises:
        StackingError: unequal step budgets, dropout in the model, ``compile``, or no trials.
        ValueError: images or labels of the wrong dtype, shape or range.
    """
    with precision_scope(config.precision):  # fp32: no TF32 inside, as fit
        return _fit_stacked(arch, trials, test_images, test_labels, config, spec=spec, pretrained=pretrained,
                            weights_path=weights_path, validation=validation, selection=selection)


def _fit_stacked(arch: str, trials: Sequence[StackedTrial], test_images: torch.Tensor, test_labels: torch.Tensor,
                 config: TrainConfig, *, spec: ModelSpec | None, pretrained: bool | None, weights_path: Any,
                 validation: tuple[torch.Tensor, torch.Tensor] | None, selection: str) -> list[TrainResult]:
    total_steps = check_trials(trials, config)
    check_images_labels(test_images, test_labels, "held-out")
    if validation is not None:
        check_images_labels(*validation, "validation")
    device = config.resolved_device()
    bf16 = config.use_bf16(device)
    memory_format = torch.contiguous_format if config.channels_last is False else torch.channels_last
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        models = []
        for trial in trials:
            torch.manual_seed(trial.seed)  # the initial weights fit() builds under this seed
            model, spec = resolve_model(arch, spec, pretrained, weights_path, config.input_size)
            models.append(model.to(device).train())
    check_stackable(models[0])
    chunk = vmap_chunk(models[0].eval(), spec.input_size, config.batch_size, len(models), device)
    models[0].train()
    params, buffers = stack_module_state(models)
    step_losses = stacked_loss(models[0], chunk)
    evaluated = models[0].to(memory_format=memory_format)  # one model at a time is loaded here for evaluation
    del models
    configs = [trial_config(config, trial) for trial in trials]
    generators = [torch.Generator().manual_seed(trial.seed) for trial in trials]
    augments = [make_augment(trial.augment) for trial in trials]
    sizes = [len(trial.train_images) for trial in trials]
    offsets = [sum(sizes[:k]) for k in range(len(trials))]
    images = torch.cat([trial.train_images.to(device) for trial in trials])
    labels = torch.cat([trial.train_labels.to(device) for trial in trials])
    streams = [BatchStream(n, config.batch_size, g) for n, g in zip(sizes, generators)]
    x_test = test_images.to(device)
    logs = [EvaluationLog(x_test, test_labels, spec, c, device, bf16, validation=validation, selection=selection)
            for c in configs]
    optimizer = torch.optim.Adam(params.values(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = make_scheduler(optimizer, config, total_steps)
    loss_sums = torch.zeros(len(trials), device=device)
    bar = tqdm(total=total_steps, disable=not config.progress, desc=f"{spec.name} x{len(trials)} stacked", unit="step")
    for step in range(1, total_steps + 1):
        x, y, ended = _batches(streams, generators, augments, images, labels, offsets, spec, device)
        with autocast(device, bf16):
            losses = step_losses(params, buffers, x, y)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sums += losses.detach()
        bar.update(1)
        for k, log in enumerate(logs):
            due = (step % config.eval_every == 0) if config.eval_every else ended[k]  # as in fit
            if (due or step == total_steps) and not log.stopped_early:
                # A stopped model keeps stepping with the rest (its weights are not read again): cheaper than
                # taking it out of the stack, and its history and best weights are already final.
                log.record(_load_model(evaluated, params, buffers, k), streams[k].epoch_label(), step, loss_sums[k])
                loss_sums[k] = 0
        if all(log.stopped_early for log in logs):
            break
    bar.close()
    steps_done = int(next(iter(optimizer.state.values()))["step"]) if optimizer.state else 0
    results = []
    for k, (log, cfg) in enumerate(zip(logs, configs)):
        model = _load_model(copy.deepcopy(evaluated), params, buffers, k).train()
        # a model that stopped early took its last own step at its last evaluation, where its lone run breaks off
        steps = int(log.rows[-1]["step"]) if log.stopped_early else steps_done
        results.append(log.result(model, spec, cfg, optimizer_steps=steps))
    return results
