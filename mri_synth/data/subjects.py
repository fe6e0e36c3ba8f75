"""Who is who: recover each slice's person from the pixels, because the sources carry no subject ids.

The Alzheimer MRI dataset is 200 people x 32 consecutive axial slices, and the hub splits it by slice. Neighbouring
slices of one person are near-duplicates, far closer to each other than to anyone else's, so a graph that joins
every slice to the slices it is mutually among the 2 nearest neighbours of (cosine similarity of pixels, each image
centred on its own mean) falls apart into one chain per person. On the real data its connected components are
exactly 200 groups of 32, each of one class, and every slice of a group has 2 mutual neighbours except the two ends
of the chain, so the chain also gives the slices' order (``Subjects.positions``).

Measured on the real data (both splits, 6,400 slices): mutual and plain 2-NN graphs at 128 px and at 64 px (2x2
average pooling) give the same 200 x 32 partition; 32 px already merges two people in the plain graph, 16 px
several. Pooling by 2 is the default: the same groups at a quarter of the cost (about 6 s on one CPU thread).

``recover_subjects`` works for any pair of splits, caches its result on disk keyed by the data's fingerprint and
its slice ids, and says when the groups are not clean (sizes differ, or a group mixes classes) with a
:class:`SubjectsWarning` and a report (``Subjects.summary()``) rather than failing silently. ``with_subjects`` fills
``Split.groups``; ``data.load_data`` calls it, so group ids travel with every split it returns.

What this module leaves to others: the leakage audit (``audit``), person-disjoint folds and validation sets
(``study``), figures (``plots``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mri_synth import paths
from mri_synth.data.types import CLASS_NAMES, MRIData, Split, Subjects  # Subjects is read from here too

NEIGHBOURS = 2
"""Each slice links to the slices it is mutually among the k nearest neighbours of: 2 neighbours make a chain."""
POOL = 2
"""Average-pool the images by this factor before comparing them: 64 px gives the same groups as 128 px, 4x faster."""
CHUNK = 1024  # rows of the similarity matrix computed at once: 1024 x 6400 float32 is 26 MB
_VERSION = 1  # bump when the recovery changes, so old caches are not reused
N_FOLDS = 5
"""Person-disjoint test folds of the ``subject`` evaluation (``study.protocol``; repeat r tests fold r % 5)."""


class SubjectsWarning(UserWarning):
    """The recovered groups are not clean people: sizes differ or a group mixes classes."""


# ------------------------------------------------------------------------------------------------- features


def pixel_features(images: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """Unit-length float32 rows of mean-centred pixels: their dot products are cosine similarities.

    Args:
        images: uint8 or float ``[N, 1, H, W]``.
        pool: average-pool factor applied first (1 keeps every pixel).

    Blank images (one grey value) become zero rows: similarity 0 to everything, never NaN.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, 1, H, W], got shape {tuple(images.shape)}")
    if not isinstance(pool, int) or pool < 1 or images.shape[-1] % pool or images.shape[-2] % pool:
        raise ValueError(f"pool must be a positive int dividing the image side {images.shape[-1]}, got {pool!r}")
    x = images.float()
    if pool > 1:
        x = F.avg_pool2d(x, pool)
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def nearest_neighbours(features: torch.Tensor, k: int) -> np.ndarray:
    """Indices ``[N, k]`` of each row's k most similar other rows (cosine), computed in chunks."""
    n = len(features)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, CHUNK):
        sim = features[start:start + CHUNK] @ features.T
        rows = torch.arange(len(sim))
        sim[rows, rows + start] = -2.0  # never one's own neighbour
        out[start:start + CHUNK] = sim.topk(k, dim=1).indices.numpy()
    return out


# ------------------------------------------------------------------------------------------------- the groups


def _chain_positions(groups: np.ndarray, mutual) -> np.ndarray:
    """Position along each group's chain where the mutual graph of the group is a simple path, else -1."""
    positions = np.full(len(groups), -1, dtype=np.int64)
    degree = np.asarray(mutual.sum(1)).ravel()
    indptr, indices = mutual.indptr, mutual.indices
    order = np.argsort(groups, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(groups[order])) + 1):
        ends = members[degree[members] <= 1]
        if len(members) == 1:
            positions[members] = 0
            continue
        # a simple path: exactly two ends of degree 1, every other slice degree 2 (a connected graph: no cycle)
        if len(ends) != 2 or (degree[members] > 2).any() or (degree[members] == 0).any():
            continue
        previous, current = -1, int(ends.min())
        for step in range(len(members)):
            positions[current] = step
            following = [j for j in indices[indptr[current]:indptr[current + 1]] if j != previous]
            previous, current = current, (int(following[0]) if following else -1)
    return positions


def _compute(images: torch.Tensor, k: int, pool: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(images)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    k = min(k, n - 1)
    if k == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    with torch.no_grad():
        neighbours = nearest_neighbours(pixel_features(images, pool), k)
    rows = np.repeat(np.arange(n), k)
    knn = coo_matrix((np.ones(n * k, dtype=np.int8), (rows, neighbours.ravel())), shape=(n, n)).tocsr()
    mutual = knn.multiply(knn.T).tocsr()
    _, component = connected_components(mutual, directed=False)
    # renumber groups by their first slice, so ids do not depend on scipy's labelling
    _, first = np.unique(component, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    groups = rank[component]
    return groups, _chain_positions(groups, mutual)


def _cache_file(fingerprint: str, ids: tuple[str, ...], k: int, pool: int):
    ids_hash = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    return paths.cache_dir() / "subjects" / f"{fingerprint}-{ids_hash}-k{k}-p{pool}-v{_VERSION}.npz"


def recover_subjects(data: MRIData, *, neighbours: int = NEIGHBOURS, pool: int = POOL, cache: bool = True
                     ) -> Subjects:
    """Group the slices of both splits into people by the mutual nearest-neighbour graph of their pixels.

    Args:
        data: the source's train and test splits (all slices of both are compared).
        neighbours: k of the mutual k-NN graph; 2 links each slice to its neighbours above and below.
        pool: average-pool factor of the images before comparison (see :data:`POOL`).
        cache: read and write ``paths.cache_dir()/subjects``, keyed by the data's fingerprint and slice ids.

    Returns:
        The groups, their chain order and what they look like. Warns (:class:`SubjectsWarning`, with the summary)
        when the groups are not clean people.
    """
    if not isinstance(neighbours, int) or neighbours < 1:
        raise ValueError(f"neighbours must be a positive int (2 links a slice to the one above and below), "
                         f"got {neighbours!r}")
    ids = data.train.ids + data.test.ids
    labels = torch.cat([data.train.labels, data.test.labels]).numpy()
    cache_file = _cache_file(data.fingerprint, ids, neighbours, pool)
    found = None
    if cache and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as blob:
                found = blob["groups"].astype(np.int64), blob["positions"].astype(np.int64)
            if len(found[0]) != len(ids) or len(found[1]) != len(ids):
                raise ValueError(f"{len(found[0])} groups for {len(ids)} slices")
        except Exception as err:  # a truncated or foreign file: rebuild it rather than trust it
            warnings.warn(f"subject cache {cache_file} is unreadable ({err}); recomputing it", stacklevel=2)
            found = None
    if found is None:
        found = _compute(torch.cat([data.train.images, data.test.images]), neighbours, pool)
        if cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f"{cache_file.stem}.tmp{os.getpid()}.npz")
            np.savez(tmp, groups=found[0], positions=found[1])
            tmp.replace(cache_file)  # atomic: a killed run never leaves half a cache file
    subjects = Subjects(found[0], found[1], labels, len(data.train))
    if not subjects.clean:
        warnings.warn(f"{data.source}: {subjects.summary()}", SubjectsWarning, stacklevel=2)
    return subjects


def with_subjects(data: MRIData, **options) -> MRIData:
    """``data`` with ``groups`` filled in both splits and the recovery report in ``data.subjects``.

    ``options`` go to :func:`recover_subjects`.
    """
    subjects = recover_subjects(data, **options)
    train = dataclasses.replace(data.train, groups=torch.from_numpy(subjects.train_groups.copy()))
    test = dataclasses.replace(data.test, groups=torch.from_numpy(subjects.test_groups.copy()))
    return dataclasses.replace(data, train=train, test=test, subjects=subjects)


def person_order(data: MRIData, person: int) -> tuple[Split, str]:
    """One person's slices in chain order (by split and id where the chain is unknown), and a caption."""
    subjects = data.subjects if data.subjects is not None else recover_subjects(data)
    if not 0 <= person < subjects.n_groups:
        raise ValueError(f"person must be a group id in 0..{subjects.n_groups - 1}, got {person!r}")
    members = np.flatnonzero(subjects.groups == person)
    positions = subjects.positions[members]
    if (positions >= 0).all():
        members = members[np.argsort(positions)]
    images = torch.cat([data.train.images, data.test.images])[members]
    labels = torch.cat([data.train.labels, data.test.labels])[members]
    ids = data.train.ids + data.test.ids
    in_test = int((members >= subjects.n_train).sum())
    order = " in chain order" if (positions >= 0).all() else ""
    caption = (f"person {person} ({CLASS_NAMES[subjects.group_labels[person]]}): {len(members)} slices{order}, "
               f"{len(members) - in_test} train / {in_test} test")
    return Split(images, labels, tuple(ids[i] for i in members), torch.full((len(members),), person)), caption
