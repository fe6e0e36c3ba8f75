"""What a classifier looks at: class activation maps (CAMs) of real and synthetic slices, and how much they agree.

The thesis (chapter 3, Figures 3.1-3.4) put a Grad-CAM of a real ModerateDemented or NonDemented slice beside the
Grad-CAM of a synthetic variation of it, both explained for ModerateDemented, and judged by eye that the model
looks at the same atrophy in both. This module makes those panels for any registered architecture and adds the
number the thesis lacked: how well the two maps agree, over many real/synthetic pairs per class, against a
baseline of *unrelated* real pairs of the same class (the source paired with another real slice of its class).

- :class:`CamExplainer`: a context manager around a ``pytorch-grad-cam`` method (Grad-CAM, Grad-CAM++, Score-CAM,
  EigenCAM, ... chosen by name from :data:`CAM_METHODS`) reading the registry's target layer, with the ViT
  token reshape; its hooks are released on exit. ``explain(images, target_class)`` gives maps in [0, 1] at the
  slices' own size.
- :func:`overlay_cam`: the library's ``show_cam_on_image`` on the grayscale slice (an RGB array).
- :func:`cam_correlation`, :func:`top_region_overlap`: agreement of two maps; :func:`agreement_table` (tidy, one
  row per pair x metric) and :func:`summarize_agreement`.

Left to others: training the classifier (:mod:`mri_synth.training.fit`), model construction, input size and
normalisation (:mod:`mri_synth.training.models`), making variations (:mod:`mri_synth.synth`), the figures (the thesis's
panels :func:`mri_synth.chapters.gradcam.real_vs_synthetic_figure`, :func:`mri_synth.chapters.gradcam.plot_agreement`)
and saving them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mri_synth.data.types import CLASS_NAMES, Split, class_id
from mri_synth.training.models import ModelSpec, get_spec

CAM_METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
}
"""CAM methods by name (``"Grad-CAM++"``, ``"score_cam"`` and other spellings are accepted).

EigenCAM is class-agnostic (the first principal component of the activations): its map ignores the target class.
"""

BRAIN_THRESHOLD = 10
"""Grey level above which a pixel of a slice counts as brain (the background is black; its JPEG noise stays
below this)."""

PAIR_KINDS = ("real-synthetic", "real-real (unrelated)")
"""The two kinds of pairs :func:`agreement_table` compares: a source and its variation, a source and another real
slice of its class."""


def cam_method(name: str) -> type:
    """The ``pytorch-grad-cam`` class of a method name, in any spelling (``"Grad-CAM++"`` -> ``GradCAMPlusPlus``)."""
    key = re.sub(r"[\s_\-]", "", str(name).lower()).replace("plusplus", "++")
    if key not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {name!r}: use one of {sorted(CAM_METHODS)}")
    return CAM_METHODS[key]


def resolve_class(target: int | str) -> int:
    """A class id from an id or a class name in any spelling (``"ModerateDemented"`` -> 1)."""
    if isinstance(target, str):
        return class_id(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < len(CLASS_NAMES):
        return int(target)
    raise ValueError(f"target class {target!r} is neither a class id in 0..{len(CLASS_NAMES) - 1} nor one of "
                     f"{CLASS_NAMES}")


class CamExplainer:
    """CAMs of one trained classifier, through its registry spec; use it as a context manager.

    The ``pytorch-grad-cam`` object (and with it the forward hooks on the target layer) exists only inside the
    ``with`` block, so a loop over many models or images leaves no hooks and no held activations behind::

        with CamExplainer(model, "cnn", method="gradcam") as explainer:
            cams = explainer.explain(split.images[:8], target_class="Moderate_Demented")

    The model is put in eval mode inside the block and returned to its former mode on exit.

    Args:
        model: A classifier built by :func:`mri_synth.training.models.create_model` (any device).
        spec: Its registry name or :class:`~mri_synth.training.models.ModelSpec` (input size, normalisation, target
            layer, ViT reshape); pass the same spec the model was built from (e.g. a ``with_input_size`` one).
        method: A key of :data:`CAM_METHODS`.
        batch_size: Images per forward/backward pass (Score-CAM also uses it for its masked passes).
    """

    def __init__(self, model: nn.Module, spec: str | ModelSpec, *, method: str = "gradcam",
                 batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.spec = get_spec(spec) if isinstance(spec, str) else spec
        self.method = method
        self.batch_size = batch_size
        self._method_class = cam_method(method)
        self._target_layers = self.spec.gradcam_target_layers(model)  # fails early on a wrong spec
        self._cam: Any = None
        self._was_training = model.training

    def __enter__(self) -> CamExplainer:
        if self._cam is not None:
            raise RuntimeError("this CamExplainer is already open; nest a second CamExplainer instead of re-entering")
        self._was_training = self.model.training
        self._cam = self._method_class(model=self.model, target_layers=self._target_layers,
                                       reshape_transform=self.spec.reshape_transform)
        self._cam.batch_size = self.batch_size
        return self

    def __exit__(self, *exc_info: object) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.activations_and_grads.release()
            cam.outputs = None  # the last forward's graph, kept by the library
        self.model.zero_grad(set_to_none=True)  # the backward passes filled parameter gradients
        self.model.train(self._was_training)

    def _targets(self, target_class: int | str | Sequence[int | str] | torch.Tensor | None, n: int) -> list | None:
        if target_class is None:
            return None  # the library explains each image's predicted class
        if isinstance(target_class, (int, str, np.integer)):
            return [ClassifierOutputTarget(resolve_class(target_class))] * n
        classes = [resolve_class(int(t) if isinstance(t, torch.Tensor) else t) for t in target_class]
        if len(classes) != n:
            raise ValueError(f"got {len(classes)} target classes for {n} images: give one class, one per image, or "
                             "None for the predicted class")
        return [ClassifierOutputTarget(c) for c in classes]

    def explain(self, images: torch.Tensor,
                target_class: int | str | Sequence[int | str] | torch.Tensor | None) -> torch.Tensor:
        """CAMs of ``images`` for ``target_class``.

        Args:
            images: uint8 ``[N, 1, H, W]`` slices (a Split's images, or synthetic ones).
            target_class: The class to explain: an id or name for all images, one per image, or ``None`` for
                each image's predicted class.

        Returns:
            float32 ``[N, H, W]`` on the CPU, each map scaled by the library to [0, 1] (0 everywhere when the
            model finds no positive evidence for the class) and resized to the slices' own ``H x W``.
        """
        if self._cam is None:
            raise RuntimeError("CamExplainer.explain was called outside its `with` block; use "
                               "`with CamExplainer(model, spec) as explainer: explainer.explain(...)`")
        if len(images) == 0:
            return torch.zeros(0, *images.shape[-2:])
        targets = self._targets(target_class, len(images))
        device = next(self.model.parameters()).device
        maps = []
        for start in range(0, len(images), self.batch_size):
            batch = self.spec.prepare(images[start:start + self.batch_size].to(device))
            chunk = None if targets is None else targets[start:start + self.batch_size]
            with torch.enable_grad():
                maps.append(torch.from_numpy(self._cam(input_tensor=batch, targets=chunk)))
            self._cam.outputs = None
        cams = torch.cat(maps)
        if cams.shape[-2:] != images.shape[-2:]:
            cams = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return cams.clamp_(0.0, 1.0)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities ``float32 [N, 4]`` (CPU) of ``images``, for captions beside the maps."""
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = torch.cat([self.model(self.spec.prepare(images[s:s + self.batch_size].to(device))).softmax(-1).cpu()
                         for s in range(0, len(images), self.batch_size)])
        self.model.train(was_training)
        return out


def class_activation_maps(model: nn.Module, spec: str | ModelSpec, images: torch.Tensor,
                          target_class: int | str | Sequence[int | str] | torch.Tensor | None, *,
                          method: str = "gradcam", batch_size: int = 32) -> torch.Tensor:
    """One-shot :meth:`CamExplainer.explain` (hooks released before returning)."""
    with CamExplainer(model, spec, method=method, batch_size=batch_size) as explainer:
        return explainer.explain(images, target_class)


# -- agreement of two maps -------------------------------------------------------------------------------------------

def _flat_pair(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ValueError(f"CAMs must both be [H, W] or [N, H, W] of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a, b = (a[None], b[None]) if a.ndim == 2 else (a, b)
    if mask is None:
        mask = torch.ones_like(a, dtype=torch.bool)
    mask = torch.as_tensor(mask, dtype=torch.bool)
    mask = mask[None] if mask.ndim == 2 else mask
    if mask.shape[-2:] != a.shape[-2:] or mask.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit CAMs {tuple(a.shape)}: give one [H, W] mask or "
                         "one per pair")
    return a.flatten(1), b.flatten(1), mask.expand_as(a).flatten(1)


def cam_correlation(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of two maps over pixels, per pair: ``[N]`` float64.

    Args:
        a, b: Maps ``[H, W]`` or ``[N, H, W]``.
        mask: Optional bool ``[H, W]`` or ``[N, H, W]``: only these pixels count (e.g. the brain, so that the
            shared outline of every slice does not make any two maps agree).

    Returns:
        The correlation per pair; NaN where a map is constant over the counted pixels.
    """
    x, y, m = _flat_pair(a, b, mask)
    w = m.double()
    n = w.sum(1, keepdim=True).clamp_min(1)
    x = (x - (x * w).sum(1, keepdim=True) / n) * w
    y = (y - (y * w).sum(1, keepdim=True) / n) * w
    denominator = x.norm(dim=1) * y.norm(dim=1)
    return torch.where(denominator > 1e-12, (x * y).sum(1) / denominator.clamp_min(1e-300), torch.nan)


def top_region_overlap(a: torch.Tensor, b: torch.Tensor, top_fraction: float = 0.2,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Overlap (intersection over union) of the two maps' top ``top_fraction`` pixels, per pair: ``[N]``.

    Each map's region is its ``ceil(top_fraction * P)`` highest of the ``P`` counted pixels (all, or those in
    ``mask``; ties broken by position), so both regions have the same size; 1 means the same pixels, 0 disjoint
    regions. Two random regions of share ``q`` overlap by about ``q / (2 - q)`` (0.11 at q = 0.2). NaN where a
    map is constant (e.g. an all-zero Grad-CAM, when the model sees no evidence for the class): such a map has
    no top region.
    """
    if not 0 < top_fraction < 1:
        raise ValueError(f"top_fraction must be in (0, 1), e.g. 0.2 for the top 20% of pixels; got {top_fraction}")
    x, y, m = _flat_pair(a, b, mask)
    k = (top_fraction * m.sum(1, keepdim=True)).ceil().clamp_min(1)

    def region(v: torch.Tensor) -> torch.Tensor:
        order = v.masked_fill(~m, -torch.inf).argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(v.shape[1]).expand_as(order))
        return rank < k

    in_x, in_y = region(x), region(y)
    overlap = (in_x & in_y).sum(1).double() / (in_x | in_y).sum(1).double()
    inf = torch.tensor(torch.inf, dtype=torch.float64)
    constant = (torch.where(m, x, -inf).amax(1) == torch.where(m, x, inf).amin(1)) | \
        (torch.where(m, y, -inf).amax(1) == torch.where(m, y, inf).amin(1))
    return torch.where(constant, torch.nan, overlap)


def agreement_table(explainer: CamExplainer, real: Split, synthetic_images: torch.Tensor,
                    synthetic_source_ids: Sequence[str], *, synthetic_ids: Sequence[str] | None = None,
                    target_class: int | str | None = None, top_fraction: float = 0.2,
                    brain_threshold: int | None = BRAIN_THRESHOLD, seed: int = 0) -> pd.DataFrame:
    """Agreement of CAMs over real/synthetic pairs and, as a baseline, unrelated real pairs of the same class.

    Each synthetic image is paired with its source; for each such pair one baseline pair is drawn: the same
    source and another real slice of its class (seeded), so both kinds have the same sources and counts. Classes
    with a single real slice get no baseline pair. Both metrics count only the source's brain (its pixels
    brighter than ``brain_threshold``): over whole slices, any two maps agree through the shared outline alone.

    Args:
        explainer: An open :class:`CamExplainer` (inside its ``with`` block).
        real: The real slices the sources come from (every ``synthetic_source_ids`` must be in ``real.ids``).
        synthetic_images: uint8 ``[M, 1, H, W]`` variations (e.g. from ``SyntheticBank.sample``).
        synthetic_source_ids: ``[M]`` the real id each variation was made from.
        synthetic_ids: ``[M]`` ids of the variations (for the table); default ``"variation <i>"``.
        target_class: The class both maps explain; ``None``: each source's own class.
        top_fraction: Share of the counted pixels in the top region of :func:`top_region_overlap`.
        brain_threshold: Grey level above which a source pixel is brain; ``None`` counts every pixel.
        seed: Seed of the baseline draw.

    Returns:
        A tidy table, one row per pair x metric: ``pair_kind`` (see :data:`PAIR_KINDS`), ``class_name``
        (the source's class), ``explained_class``, ``source_id``, ``other_id``, ``metric``
        (``"correlation"`` or ``"top{pct}%_overlap"``), ``value``.
    """
    if len(synthetic_images) != len(synthetic_source_ids):
        raise ValueError(f"{len(synthetic_images)} synthetic images but {len(synthetic_source_ids)} source ids; "
                         "pass the images and source_ids returned together by SyntheticBank.sample")
    position = {sid: i for i, sid in enumerate(real.ids)}
    missing = sorted({s for s in synthetic_source_ids if s not in position})
    if missing:
        raise ValueError(f"{len(missing)} source ids are not in the real split (e.g. {missing[:3]}); pass the Split "
                         "the variations were made from")
    synthetic_ids = list(synthetic_ids) if synthetic_ids is not None else \
        [f"variation {i}" for i in range(len(synthetic_images))]
    source = torch.tensor([position[s] for s in synthetic_source_ids], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    partner = torch.full_like(source, -1)
    for i, src in enumerate(source.tolist()):
        same = torch.nonzero((real.labels == real.labels[src]) & (torch.arange(len(real)) != src)).flatten()
        if len(same):
            partner[i] = same[torch.randint(len(same), (1,), generator=gen)].item()

    def targets_for(index: torch.Tensor) -> Any:
        return real.labels[index] if target_class is None else resolve_class(target_class)

    needed = torch.unique(torch.cat([source, partner[partner >= 0]]))
    real_cams = dict(zip(needed.tolist(), explainer.explain(real.images[needed], targets_for(needed))))
    source_cams = torch.stack([real_cams[i] for i in source.tolist()])
    brain = real.images[source][:, 0] > brain_threshold if brain_threshold is not None else None
    paired = partner >= 0
    kinds = {PAIR_KINDS[0]: (torch.arange(len(source)), explainer.explain(synthetic_images, targets_for(source)),
                             synthetic_ids),
             PAIR_KINDS[1]: (torch.nonzero(paired).flatten(),
                             torch.stack([real_cams[i] for i in partner[paired].tolist()]) if paired.any() else None,
                             [real.ids[i] for i in partner[paired].tolist()])}
    overlap_name = f"top{round(100 * top_fraction)}%_overlap"
    rows = []
    for kind, (pairs, other_cams, other_ids) in kinds.items():
        if other_cams is None:
            continue
        a, mask = source_cams[pairs], brain[pairs] if brain is not None else None
        metrics = {"correlation": cam_correlation(a, other_cams, mask),
                   overlap_name: top_region_overlap(a, other_cams, top_fraction, mask)}
        for j, i in enumerate(pairs.tolist()):
            label = int(real.labels[source[i]])
            explained = CLASS_NAMES[label if target_class is None else resolve_class(target_class)]
            for metric, values in metrics.items():
                rows.append({"pair_kind": kind, "class_name": CLASS_NAMES[label], "explained_class": explained,
                             "source_id": synthetic_source_ids[i], "other_id": other_ids[j], "metric": metric,
                             "value": float(values[j])})
    return pd.DataFrame(rows, columns=["pair_kind", "class_name", "explained_class", "source_id", "other_id",
                                       "metric", "value"])


def summarize_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Per class, metric and pair kind: pairs, median and quartiles; and the real-synthetic median's lead.

    ``pairs`` counts pairs with a defined value; ``undefined`` those without (a constant map, see
    :func:`top_region_overlap`). ``lead_over_baseline`` is the median of the real-synthetic pairs minus that of
    the unrelated real pairs: above 0, the model looks at a variation more like at its source than at another
    slice of the class.
    """
    grouped = table.groupby(["class_name", "metric", "pair_kind"])["value"]
    summary = grouped.agg(pairs="count", undefined=lambda v: int(v.isna().sum()), median="median",
                          q25=lambda v: v.quantile(0.25), q75=lambda v: v.quantile(0.75)).reset_index()
    medians = summary.pivot_table(index=["class_name", "metric"], columns="pair_kind", values="median")
    lead = (medians.get(PAIR_KINDS[0]) - medians.get(PAIR_KINDS[1])) if set(PAIR_KINDS) <= set(medians.columns) \
        else pd.Series(np.nan, index=medians.index)
    summary = summary.merge(lead.rename("lead_over_baseline").reset_index(), on=["class_name", "metric"])
    return summary.sort_values(["metric", "class_name", "pair_kind"], ignore_index=True)


# -- overlays --------------------------------------------------------------------------------------------------------

def overlay_cam(image: torch.Tensor | np.ndarray, cam: torch.Tensor | np.ndarray,
                image_weight: float = 0.5) -> np.ndarray:
    """A grayscale slice (uint8 ``[1, H, W]`` or ``[H, W]``) with its CAM as a jet heat map: uint8 ``[H, W, 3]``."""
    gray = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    gray = gray[0] if gray.ndim == 3 else gray
    mask = np.asarray(cam.detach().cpu() if isinstance(cam, torch.Tensor) else cam, dtype=np.float32)
    if gray.shape != mask.shape:
        raise ValueError(f"slice {gray.shape} and CAM {mask.shape} differ in size; explain the slice itself")
    rgb = np.repeat((gray / 255.0)[..., None], 3, axis=2)
    return show_cam_on_image(rgb, np.clip(mask, 0, 1), use_rgb=True, image_weight=image_weight)
