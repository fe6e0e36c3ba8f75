"""Stratified sampling of a split's images: deterministic, proportional per class, nested across fractions.

Which subset a trial uses (and person-level sampling in the ``subject`` evaluation) is :mod:`mri_synth.study`'s.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mri_synth.data.types import check_fraction


def stratified_sample(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a stratified sample: per-class proportional, at least one image per present class.

    For one seed the samples are nested: the 30% sample is contained in the 40% sample, because each class's
    sample is a prefix of one seeded permutation of that class.

    Args:
        labels: int64 [N] class ids.
        fraction: share of each class to keep, in (0, 1].
        seed: the sample's seed; the same seed gives the same indices.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    fraction = check_fraction(fraction)
    labels_np = np.asarray(torch.as_tensor(labels).cpu())
    chosen = []
    for c in np.unique(labels_np):
        members = np.flatnonzero(labels_np == c)
        order = np.random.default_rng([seed, int(c)]).permutation(len(members))
        keep = min(len(members), max(1, math.floor(fraction * len(members) + 0.5)))
        chosen.append(members[order[:keep]])
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


# ---------------------------------------------------------------------------------------------------- export
