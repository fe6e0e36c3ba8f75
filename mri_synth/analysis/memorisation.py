"""Memorisation checks: is a synthetic slice a copy of a real one?

- :func:`nearest_real`: for each synthetic image, its nearest real training image (pixel RMSE), beside the same
  distance between real images (the baseline a copy would beat);
- :func:`copy_check`: each variation's similarity (SSIM) to its own source against the similarity of the source
  to its adjacent slice: closer to the source than a neighbouring slice is a copy, not a variation;
- :func:`median_adjacent_ssim`: how alike neighbouring slices are, the scale a variation's similarity is read on.

Distribution metrics (FD, KID, precision/recall) and the report that gathers everything are
:mod:`mri_synth.analysis.fidelity`'s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as ssim


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


def nearest(queries: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False, shortlist: int = 5
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
    if exclude_self:  # in a set no larger than the shortlist the image itself is among the candidates
        exact[candidates == torch.arange(len(queries)).unsqueeze(1)] = float("inf")
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
    best, arg = nearest(synthetic_images, real_images)
    rows = []
    for i, (d, a, s) in enumerate(zip(best.tolist(), arg.tolist(), synthetic_source_ids)):
        to_source = float(_exact_rmse(synthetic_images[i].flatten(), real_images[index[s]].flatten())) \
            if s in index else np.nan
        rows.append({"kind": "synthetic", "image": i, "nearest_id": real_ids[a], "distance": d, "source_id": s,
                     "distance_to_source": to_source, "nearest_is_source": real_ids[a] == s})
    best, arg = nearest(real_images, real_images, exclude_self=True)
    rows += [{"kind": "real", "image": i, "nearest_id": real_ids[a], "distance": d}
             for i, (d, a) in enumerate(zip(best.tolist(), arg.tolist()))]
    return pd.DataFrame(rows)


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM (0..1 for slices; 1 for identical images) of matching pairs of ``uint8[N, 1, H, W]``: ``float[N]``."""
    if a.shape != b.shape:
        raise ValueError(f"similarity compares matching pairs: got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    # float32 in chunks of 32: torchmetrics' SSIM in float64 took ~20 GB for 256 slices of 128 px
    return torch.cat([ssim(a[s:s + 32].float(), b[s:s + 32].float(), data_range=255.0, reduction="none")
                      for s in range(0, len(a), 32)])


def adjacent_index(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Index of each slice's adjacent slice, approximated by its nearest other slice (pixel RMSE) of its class.

    Until subject ids exist this stands in for "the next slice of the same person": consecutive slices of one
    person are each other's nearest neighbours in this data set. A class with one slice gets -1.
    """
    out = torch.full((len(images),), -1, dtype=torch.int64)
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) > 1:
            out[members] = members[nearest(images[members], images[members], exclude_self=True)[1]]
    return out


def copy_check(synthetic_images: torch.Tensor, synthetic_source_ids: Sequence[str], source_images: torch.Tensor,
               source_labels: torch.Tensor, source_ids: Sequence[str]) -> pd.DataFrame:
    """Each variation's similarity to its own source against the source's similarity to its adjacent slice.

    Returns:
        One row per synthetic image: ``source_id``, ``to_source`` (SSIM to its source), ``adjacent`` (SSIM of the
        source to its adjacent slice, see :func:`adjacent_index`) and ``copy`` (``to_source > adjacent``: the
        variation is closer to its source than a neighbouring slice of the same person is).
    """
    index = {s: i for i, s in enumerate(source_ids)}
    if missing := [s for s in synthetic_source_ids if s not in index]:
        raise ValueError(f"{len(missing)} synthetic images have sources not among source_ids (e.g. {missing[0]!r});"
                         " pass the real images the variations were made from")
    src = torch.tensor([index[s] for s in synthetic_source_ids])
    adjacent = adjacent_index(source_images, source_labels)
    has = adjacent >= 0
    adjacent_sim = torch.full((len(source_images),), float("nan"))
    adjacent_sim[has] = similarity(source_images[has], source_images[adjacent[has]])
    to_source = similarity(synthetic_images, source_images[src])
    return pd.DataFrame({"source_id": list(synthetic_source_ids), "to_source": to_source.numpy(),
                         "adjacent": adjacent_sim[src].numpy(),
                         "copy": (to_source > adjacent_sim[src]).numpy()})


def median_adjacent_ssim(images: torch.Tensor, labels: torch.Tensor) -> float:
    """The median SSIM of each slice to its adjacent slice (:func:`adjacent_index`): the copy test's floor."""
    adjacent = adjacent_index(images, labels)
    has = adjacent >= 0
    return float(np.median(similarity(images[has], images[adjacent[has]]).numpy()))  # as pandas: mean of the middle two
