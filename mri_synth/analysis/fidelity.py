"""Simple fidelity checks of synthetic images against the real ones they imitate, as tidy tables.

- :func:`intensity_histograms`: per-class pixel-intensity distributions, real vs synthetic.
- :func:`classifier_labels`: how a classifier trained on real images labels synthetic ones.
- :class:`PenultimateFeatures`: a feature space learned from real training slices only (the input of a
  real-trained classifier's last linear layer; no ImageNet weights), in which
  :func:`frechet_distance` and :func:`kernel_distance` (``torchmetrics``' FID and KID with that feature space) and
  :func:`precision_recall` (k-NN manifolds, Kynkaenniemi et al. 2019) compare synthetic with real slices;
- :func:`fidelity_report`: all of them in one table, each beside its real-vs-real floor.

Memorisation (nearest real, copies) is :mod:`mri_synth.analysis.memorisation`'s; the report below uses it. The figures
of these tables are in :mod:`mri_synth.analysis.synthetic_figures`. The classifier is trained elsewhere
(``training.classifier``) and given here: nothing in this module trains.
"""

from __future__ import annotations

import warnings
from typing import Callable, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from mri_synth.analysis.memorisation import copy_check, nearest
from mri_synth.data.types import CLASS_NAMES


def intensity_histograms(real_images: torch.Tensor, real_labels: torch.Tensor, synthetic_images: torch.Tensor,
                         synthetic_labels: torch.Tensor, *, bins: int = 32, skip_background: bool = True
                         ) -> pd.DataFrame:
    """Per-class intensity densities: columns ``class, kind (real/synthetic), intensity (bin centre), density``.

    Args:
        skip_background: Leave out pixels below 8; the black background outweighs the brain otherwise.
    """
    edges = np.linspace(0, 256, bins + 1)
    rows = []
    for kind, images, labels in (("real", real_images, real_labels), ("synthetic", synthetic_images,
                                                                      synthetic_labels)):
        for c, name in enumerate(CLASS_NAMES):
            pixels = images[labels == c].flatten().numpy()
            if skip_background:
                pixels = pixels[pixels >= 8]
            if not len(pixels):
                continue
            density, _ = np.histogram(pixels, bins=edges, density=True)
            rows += [{"class": name, "kind": kind, "intensity": (lo + hi) / 2, "density": d}
                     for lo, hi, d in zip(edges[:-1], edges[1:], density)]
    return pd.DataFrame(rows)


def classifier_labels(proba: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Share of synthetic images of each class (rows) that the classifier assigns to each class (columns).

    Args:
        proba: ``[N, 4]`` class probabilities of the synthetic images (``mri_synth.training.evaluation.predict_proba``).
        labels: ``int64[N]`` the class each synthetic image was made for (its source's class).
    """
    predicted = proba.argmax(1)
    table = pd.crosstab(pd.Categorical([CLASS_NAMES[i] for i in labels.tolist()], CLASS_NAMES),
                        pd.Categorical([CLASS_NAMES[i] for i in predicted.tolist()], CLASS_NAMES),
                        normalize="index", dropna=False)
    table.index.name, table.columns.name = "made as", "labelled as"
    return table


def summary_table(nearest: pd.DataFrame, labels_table: pd.DataFrame, proba: torch.Tensor, labels: torch.Tensor
                  ) -> pd.DataFrame:
    """One row of headline numbers: median nearest-real distances, how often the nearest is the source, accuracy."""
    syn, real = nearest[nearest.kind == "synthetic"], nearest[nearest.kind == "real"]
    return pd.DataFrame([{
        "synthetic images": len(syn),
        "median RMSE to nearest real": syn.distance.median(),
        "median RMSE real to nearest other real": real.distance.median(),
        "nearest real is its source": syn.nearest_is_source.mean(),
        "classifier agrees with class": float((proba.argmax(1) == labels).float().mean()),
    }])


# ------------------------------------------------------------------------------------------- learned feature space


class InputSpec(Protocol):
    """What the features need of a model's spec (``training.models.ModelSpec`` has it): its input from uint8 slices."""

    def prepare(self, images: torch.Tensor) -> torch.Tensor: ...


class PenultimateFeatures(nn.Module):
    """A real-trained classifier's penultimate features of ``uint8[N, 1, H, W]`` slices: ``float[N, F]``.

    The features are the input of the model's last ``nn.Linear`` (the basic CNN's second hidden layer, a timm
    model's pooled features). Train the classifier on real training slices only and freeze it before any
    generator setting is tuned; its feature space then carries no ImageNet or synthetic information.

    Args:
        model: The trained classifier (kept in eval mode; its weights are never changed).
        spec: Its spec (resizing and normalisation: ``training.models.ModelSpec``).
        batch_size: Images per forward pass.
    """

    def __init__(self, model: nn.Module, spec: InputSpec, batch_size: int = 256) -> None:
        super().__init__()
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take penultimate features from; "
                             "pass a classifier whose head is an nn.Linear (any model of mri_synth.training.models)")
        self.model, self.spec, self.batch_size = model.eval(), spec, batch_size
        self.head = linears[-1]
        self.num_features = self.head.in_features  # torchmetrics reads it instead of probing with a dummy image

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features and, as a side product kept in ``self.last_proba``, the class probabilities."""
        captured: list[torch.Tensor] = []
        hook = self.head.register_forward_hook(lambda m, inp, out: captured.append(inp[0].float().flatten(1)))
        device = next(self.model.parameters()).device
        feats, proba = [], []
        try:
            for s in range(0, len(images), self.batch_size):
                logits = self.model(self.spec.prepare(images[s:s + self.batch_size].to(device)))
                feats.append(captured.pop().cpu())
                proba.append(logits.float().softmax(1).cpu())
        finally:
            hook.remove()
        self.last_proba = torch.cat(proba)
        return torch.cat(feats)


class _Given(nn.Module):
    """Passes features already extracted through to torchmetrics (features are computed once, used thrice)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real_features: torch.Tensor, synthetic_features: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (torchmetrics' FID, custom features)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=_Given(real_features.shape[1]), normalize=True)
    fid.update(real_features.double(), real=True)
    fid.update(synthetic_features.double(), real=False)
    return float(fid.compute())


def kernel_distance(real_features: torch.Tensor, synthetic_features: torch.Tensor, *, subsets: int = 50,
                    subset_size: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel (MMD, cubic polynomial kernel) distance: mean and std over random subsets (torchmetrics' KID).

    ``subset_size`` is capped at the smaller set; with it equal to both sets' size every subset is the whole
    set, and the value is the unbiased MMD^2 estimate of the two sets.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real_features), len(synthetic_features))
    with warnings.catch_warnings():  # "will save all extracted features": they are already in memory
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Given(real_features.shape[1]), subsets=subsets, subset_size=size)
    kid.update(real_features.double(), real=True)
    kid.update(synthetic_features.double(), real=False)
    with torch.random.fork_rng():  # torchmetrics draws subsets from the global RNG
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


def precision_recall(real_features: torch.Tensor, synthetic_features: torch.Tensor, k: int = 3
                     ) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) of k-NN manifolds in feature space.

    Precision: the share of synthetic points inside some real point's ball (radius: its distance to its k-th
    nearest other real point). Recall: the share of real points inside some synthetic point's ball.
    """
    if min(len(real_features), len(synthetic_features)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} real and synthetic images; pass more "
                         "images or a smaller k")

    def radii(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself

    real, syn = real_features.double(), synthetic_features.double()
    cross = torch.cdist(syn, real)  # [S, R]
    precision = (cross <= radii(real).unsqueeze(0)).any(1).double().mean()
    recall = (cross.T <= radii(syn).unsqueeze(0)).any(1).double().mean()
    return float(precision), float(recall)


# -------------------------------------------------------------------------------------------------- the report


def _halves(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint, class-stratified halves of a labelled set (indices)."""
    gen = torch.Generator().manual_seed(seed)
    first, second = [], []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        first.append(members[: len(members) // 2])
        second.append(members[len(members) // 2:])
    return torch.cat(first), torch.cat(second)


def fidelity_report(features: PenultimateFeatures, reference_images: torch.Tensor, reference_labels: torch.Tensor,
                    synthetic_images: torch.Tensor, synthetic_labels: torch.Tensor,
                    synthetic_source_ids: Sequence[str], source_images: torch.Tensor, source_labels: torch.Tensor,
                    source_ids: Sequence[str], *, k: int = 3, seed: int = 0) -> pd.DataFrame:
    """Every fidelity number of one synthetic set beside its real-vs-real floor, as one tidy table.

    The reference slices (held-out real slices, never test; never seen by the generator) are split into two
    class-stratified halves A and B. Distribution metrics compare A with as many synthetic images as B holds
    (drawn with ``seed``); their floor compares A with B, so both sides have the same sizes.

    Args:
        features: The real-trained feature space (its classifier also gives label fidelity).
        reference_images, reference_labels: Held-out real slices.
        synthetic_images, synthetic_labels, synthetic_source_ids: The variations, their classes and sources.
        source_images, source_labels, source_ids: The real slices the generator was trained on and varied.
        k: Neighbourhood size of precision and recall.

    Returns:
        Columns ``metric``, ``value``, ``floor`` (the real-vs-real value), ``ratio`` (value / floor).
    """
    a, b = _halves(reference_labels, seed)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(synthetic_images), generator=gen)[: len(b)]
    real_a, real_b = features(reference_images[a]), features(reference_images[b])
    ref_proba = features.last_proba
    syn = features(synthetic_images)
    syn_proba = features.last_proba
    fd, fd_floor = frechet_distance(real_a, syn[pick]), frechet_distance(real_a, real_b)
    kid, kid_floor = (kernel_distance(real_a, x, seed=seed)[0] for x in (syn[pick], real_b))
    (precision, recall), (p_floor, r_floor) = (precision_recall(real_a, x, k) for x in (syn[pick], real_b))
    copies = copy_check(synthetic_images, synthetic_source_ids, source_images, source_labels, source_ids)
    # novelty: a variation's distance to the nearest training slice against a held-out real slice's
    syn_near = nearest(synthetic_images, source_images)[0].median().item()
    real_near = nearest(reference_images, source_images)[0].median().item()
    rows = [
        ("FD", fd, fd_floor), ("KID", kid, kid_floor), ("precision", precision, p_floor),
        ("recall", recall, r_floor),
        ("label fidelity", float((syn_proba.argmax(1) == synthetic_labels).float().mean()),
         float((ref_proba.argmax(1) == reference_labels[b]).float().mean())),
        ("median SSIM to source (floor: adjacent slice)", float(copies.to_source.median()),
         float(copies.drop_duplicates("source_id").adjacent.median())),
        ("share of copies (closer to source than its adjacent slice)", float(copies["copy"].mean()), np.nan),
        ("median RMSE to nearest training slice (floor: held-out real)", syn_near, real_near),
    ]
    table = pd.DataFrame(rows, columns=["metric", "value", "floor"])
    table["ratio"] = table.value / table.floor
    return table


STRENGTH_CRITERION = ("lowest FD among the strengths whose label fidelity is at least min_label_fidelity and whose "
                      "median SSIM to the source is below the median adjacent-slice SSIM (variations, not copies); "
                      "when none passes both, the lowest FD among those that pass the copy test, else among all")


def select_strength(vary: Callable[[float], torch.Tensor], strengths: Sequence[float], features: PenultimateFeatures,
                    reference_images: torch.Tensor, reference_labels: torch.Tensor, source_images: torch.Tensor,
                    source_labels: torch.Tensor, source_ids: Sequence[str], *, min_label_fidelity: float = 0.8,
                    adjacent_ssim: float | None = None, seed: int = 0) -> tuple[float, pd.DataFrame]:
    """Pick the SDEdit strength by :data:`STRENGTH_CRITERION` on held-out slices the generator never saw.

    Args:
        vary: ``vary(strength)`` returns one variation of each source image, in order.
        strengths: The candidates.
        reference_images, reference_labels: Held-out real slices the FD is measured against.
        source_images, source_labels, source_ids: The held-out slices to vary (disjoint from the reference).
        adjacent_ssim: The median adjacent-slice SSIM the copy test compares with; None: that of the source slices
            among themselves. A few hundred held-out slices are sparse: a slice's nearest other slice there is
            seldom its neighbour (median SSIM 0.67 vs 0.84 among the 1,536 slices of a 30% subset), so pass the
            floor of a dense set, e.g. the generator's training slices, which the final variations are tested on.

    Returns:
        The chosen strength (when none passes, the lowest-FD candidate that is no copy, else the lowest-FD one;
        ``passes`` is False in the table) and one row per
        candidate: ``strength``, ``FD``, ``label fidelity``, ``median SSIM to source``, ``median adjacent SSIM``,
        ``passes``, ``chosen``.
    """
    rows = []
    for strength in strengths:
        table = fidelity_report(features, reference_images, reference_labels, vary(strength), source_labels,
                                source_ids, source_images, source_labels, source_ids, seed=seed).set_index("metric")
        ssim_row = table.loc["median SSIM to source (floor: adjacent slice)"]
        rows.append({"strength": strength, "FD": table.loc["FD", "value"],
                     "label fidelity": table.loc["label fidelity", "value"],
                     "median SSIM to source": ssim_row.value,
                     "median adjacent SSIM": ssim_row.floor if adjacent_ssim is None else adjacent_ssim})
    out = pd.DataFrame(rows)
    not_copies = out["median SSIM to source"] < out["median adjacent SSIM"]
    out["passes"] = (out["label fidelity"] >= min_label_fidelity) & not_copies
    pool = out[out.passes] if out.passes.any() else out[not_copies] if not_copies.any() else out
    chosen = float(pool.loc[pool.FD.idxmin(), "strength"])
    out["chosen"] = out.strength == chosen
    return chosen, out
