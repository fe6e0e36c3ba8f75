"""Predictions and the study's four-way metrics of a trained classifier.

``predict_proba`` turns uint8 images into class probabilities (resized and normalised by the model's spec, under the
precision the run trains in); ``metrics_from_proba`` scores them (cross-entropy, accuracy, balanced accuracy, macro-F1,
per-class recall, ECE); ``evaluate`` is both. The dementia readouts of people never seen are ``training.readouts``'s;
choosing a checkpoint from these numbers is ``training.checkpoints``'.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mri_synth.data.types import CLASS_NAMES, NUM_CLASSES
from mri_synth.training.models import ModelSpec
from mri_synth.training.settings import default_bf16

ECE_BINS = 15  # the usual equal-width binning of confidence (Guo et al. 2017)


def autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def check_images_labels(images: torch.Tensor, labels: torch.Tensor | None, what: str) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"{what} images must be uint8 [N, 1, H, W], got {images.dtype} {tuple(images.shape)}; "
                         "pass Split.images from mri_synth.data.cache.load_data")
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
    check_images_labels(images, None, "predict_proba")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = spec.prepare(images[start:start + batch_size].to(device, non_blocking=True))
            with autocast(device, default_bf16(device) if bf16 is None else bf16):
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
    check_images_labels(images, labels, "evaluate")
    return metrics_from_proba(predict_proba(model, images, spec, batch_size=batch_size, device=device, bf16=bf16),
                              labels)


