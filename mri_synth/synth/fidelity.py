"""Simple fidelity checks of synthetic images against the real ones they imitate, as tidy tables.

- :func:`intensity_histograms`: per-class pixel-intensity distributions, real vs synthetic.
- :func:`nearest_real`: for each synthetic image, its nearest real training image (a memorisation check), beside
  the same distance between real images (the baseline a copy would beat).
- :func:`classifier_labels`: how a classifier trained on real images labels synthetic ones.

The figures of these tables are in :mod:`mri_synth.synth.figures`; the classifier itself is ``mri_synth.train``'s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from mri_synth.data import CLASS_NAMES


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


def _rmse_to_all(queries: torch.Tensor, reference: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Root-mean-square pixel distance (0..255) of every query to every reference image: ``[Q, R]``."""
    ref = reference.flatten(1).float()
    ref_sq = (ref**2).sum(1)
    out = []
    for start in range(0, len(queries), batch):
        q = queries[start:start + batch].flatten(1).float()
        sq = (q**2).sum(1, keepdim=True) + ref_sq - 2 * q @ ref.T  # |q - r|^2 without a [Q, R, P] tensor
        out.append((sq.clamp_min(0) / ref.shape[1]).sqrt())
    return torch.cat(out)


def _exact_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixel RMSE of matching rows of ``a`` and ``b`` (``[..., P]``), computed directly in float64."""
    return (a.double() - b.double()).pow(2).mean(-1).sqrt()


def _nearest(queries: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False, shortlist: int = 5
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest reference image of each query: distance and index.

    The float32 expansion of |q - r|^2 ranks candidates fast but loses ~0.5 grey level to cancellation, so the
    ``shortlist`` closest candidates are re-measured exactly and the best of them is taken.
    """
    approx = _rmse_to_all(queries, reference)
    if exclude_self:
        approx.fill_diagonal_(float("inf"))  # an image is not its own neighbour
    candidates = approx.topk(min(shortlist, approx.shape[1]), dim=1, largest=False).indices
    q, ref = queries.flatten(1), reference.flatten(1)
    exact = torch.stack([_exact_rmse(q[i].expand(len(c), -1), ref[c]) for i, c in enumerate(candidates)])
    best, pos = exact.min(1)
    return best, candidates.gather(1, pos.unsqueeze(1)).squeeze(1)


def nearest_real(synthetic_images: torch.Tensor, synthetic_source_ids: Sequence[str], real_images: torch.Tensor,
                 real_ids: Sequence[str]) -> pd.DataFrame:
    """Nearest real training image of each synthetic image, and the real-to-real baseline.

    Returns:
        Columns ``kind`` ("synthetic" or "real"), ``image`` (index), ``nearest_id``, ``distance`` (pixel RMSE,
        0-255), and for synthetic rows ``source_id``, ``distance_to_source`` and ``nearest_is_source``. A synthetic
        image much closer to a real image than real images are to each other is (near) a copy.
    """
    real_ids = list(real_ids)
    index = {r: i for i, r in enumerate(real_ids)}
    best, arg = _nearest(synthetic_images, real_images)
    rows = []
    for i, (d, a, s) in enumerate(zip(best.tolist(), arg.tolist(), synthetic_source_ids)):
        to_source = float(_exact_rmse(synthetic_images[i].flatten(), real_images[index[s]].flatten())) \
            if s in index else np.nan
        rows.append({"kind": "synthetic", "image": i, "nearest_id": real_ids[a], "distance": d, "source_id": s,
                     "distance_to_source": to_source, "nearest_is_source": real_ids[a] == s})
    best, arg = _nearest(real_images, real_images, exclude_self=True)
    rows += [{"kind": "real", "image": i, "nearest_id": real_ids[a], "distance": d}
             for i, (d, a) in enumerate(zip(best.tolist(), arg.tolist()))]
    return pd.DataFrame(rows)


def classifier_labels(proba: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Share of synthetic images of each class (rows) that the classifier assigns to each class (columns).

    Args:
        proba: ``[N, 4]`` class probabilities of the synthetic images (``mri_synth.train.predict_proba``).
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
