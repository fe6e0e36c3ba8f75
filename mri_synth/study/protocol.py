"""The evaluation protocol: which slices a trial may train on, which choose its checkpoint, which report its numbers.

Two evaluations, one switch (``split``):

- ``slice``: the source's own train/test split, by slice (the thesis's; on the hub it is the hub's split). Every
  person has slices on both sides, so a model can score by recalling people it has seen: thesis-comparable, and
  as leaky as the thesis. The validation set is a fixed stratified 15% of the training slices.
- ``subject``: person-disjoint. All slices of both source splits are pooled; 5 test folds over people come from
  ``sklearn.model_selection.StratifiedGroupKFold`` (stratified by class); within each fold a fixed ~15% of the
  training people per class validate (never a Moderate person: there are two in all). Repeat ``r`` uses fold
  ``r % n_folds``.

The validation set is carved before any subset is drawn and is the same for every arm and seed of a fold; real
fractions then draw from the rest (the *pool*): slices per class in ``slice`` mode, whole people per class in
``subject`` mode (at least one per class, nested across fractions). Nothing here trains or reads pixels: these
are index computations over labels and person ids (``subjects`` recovers the ids from the pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mri_synth.data.sampling import stratified_sample
from mri_synth.data.subjects import N_FOLDS
from mri_synth.data.types import MRIData, Split

SPLIT_MODES = ("slice", "subject")
VALIDATION_SHARE = 0.15
"""Share of the training slices (``slice``) or training people per class (``subject``) that validate."""
PROTOCOL_SEED = 20240
"""Seeds the validation carve and the folds: fixed, so every arm, seed and run sees the same sets."""
NEVER_VALIDATE = (1,)
"""Class ids never put in validation in ``subject`` mode: Moderate_Demented rests on two people in all."""


@dataclass(frozen=True)
class Partition:
    """One evaluation's index sets into its slices (the sets are disjoint; sorted int64 arrays)."""

    mode: str
    fold: int  # 0 in slice mode
    pool: np.ndarray  # what a trial's real subset is drawn from
    validation: np.ndarray  # checkpoint choice and early stopping, never trained on, never a generator's
    test: np.ndarray  # read only for the reported numbers


def check_mode(mode: str) -> str:
    if mode not in SPLIT_MODES:
        raise ValueError(f"split must be one of {SPLIT_MODES} ('slice': the source's split, thesis-comparable; "
                         f"'subject': people never seen), got {mode!r}")
    return mode


def stratified_carve(labels: np.ndarray, share: float, seed: int = PROTOCOL_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, carved)``: a seeded ``share`` of each class carved out (at least one, never the whole class)."""
    carved = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(len(members) - 1, max(1, round(share * len(members))))
        carved.append(np.random.default_rng([seed, int(c)]).permutation(members)[:k])
    carved = np.sort(np.concatenate(carved)) if carved else np.empty(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), carved), carved


def slice_partition(train_labels: np.ndarray, n_test: int) -> Partition:
    """``slice`` mode over the concatenation (train split, then test split): validation from the train split."""
    train_labels = np.asarray(train_labels)
    pool, validation = stratified_carve(train_labels, VALIDATION_SHARE)
    test = np.arange(len(train_labels), len(train_labels) + n_test)
    return Partition("slice", 0, pool, validation, test)


def person_labels(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(people, their class)``: each person's class, which must be one class for all their slices."""
    people, first = np.unique(groups, return_index=True)
    classes = np.asarray(labels)[first]
    mixed = [p for p, c in zip(people, classes) if np.any(labels[groups == p] != c)]
    if mixed:
        raise ValueError(f"{len(mixed)} person id(s) carry slices of several classes (first: {mixed[0]!r}); "
                         "person ids must name one person each: recover them with mri_synth.data.subjects")
    return people, classes


def subject_partition(labels: np.ndarray, groups: np.ndarray, fold: int, n_folds: int = N_FOLDS) -> Partition:
    """``subject`` mode over all slices: fold ``fold`` of ``n_folds`` person-disjoint test folds.

    Args:
        labels: int64 [N] class per slice (train and test splits pooled).
        groups: [N] person id per slice.
        fold: which test fold (a repeat ``r`` uses ``r % n_folds``).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = np.asarray(labels), np.asarray(groups)
    if len(labels) != len(groups):
        raise ValueError(f"got {len(labels)} labels and {len(groups)} person ids: one per slice")
    people, classes = person_labels(labels, groups)
    if len(people) < n_folds:
        raise ValueError(f"{len(people)} people cannot make {n_folds} person-disjoint folds; use slice mode")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=PROTOCOL_SEED)
    folds = list(splitter.split(np.zeros(len(labels)), labels, groups))
    train_idx, test_idx = folds[fold % n_folds]
    train_people = np.unique(groups[train_idx])
    person_class = dict(zip(people, classes))
    eligible = np.array([p for p in train_people if person_class[p] not in NEVER_VALIDATE])
    _, carved = stratified_carve(np.array([person_class[p] for p in eligible]), VALIDATION_SHARE,
                                 seed=PROTOCOL_SEED + fold)
    validation_people = set(eligible[carved].tolist())
    in_validation = np.isin(groups[train_idx], list(validation_people))
    return Partition("subject", fold % n_folds, np.sort(train_idx[~in_validation]), np.sort(train_idx[in_validation]),
                     np.sort(test_idx))


def people_sample(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of all slices of a ``fraction`` of the people of each class (at least one per class).

    Nested across fractions for one seed (each class's people are a prefix of one seeded permutation), the person
    analogue of ``data.stratified_sample``.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    people, classes = person_labels(labels, groups)
    chosen = []
    for c in np.unique(classes):
        members = people[classes == c]
        order = np.random.default_rng([seed, int(c)]).permutation(len(members))
        keep = min(len(members), max(1, math.floor(fraction * len(members) + 0.5)))
        chosen.extend(members[order[:keep]].tolist())
    return np.flatnonzero(np.isin(groups, chosen))


@dataclass(frozen=True, eq=False)
class Evaluation:
    """One evaluation's slices: the pool a trial's real subset comes from, validation and test (disjoint)."""

    mode: str
    fold: int
    pool: "Split"
    validation: "Split"
    test: "Split"

    def real_subset(self, fraction: float, seed: int) -> "Split":
        """The trial's real images: ``fraction`` of the pool's slices (``slice``) or people (``subject``) per class."""
        if self.mode == "slice":
            return self.pool.subset(stratified_sample(self.pool.labels, fraction, seed=seed))
        index = people_sample(self.pool.labels.numpy(), self.pool.groups.numpy(), fraction, seed)
        return self.pool.subset(torch.from_numpy(index))


def fold_of(mode: str, repeat: int, n_folds: int = N_FOLDS) -> int:
    """The test fold of repeat ``repeat``: folds x seeds in ``subject`` mode, the one source split in ``slice``."""
    return repeat % n_folds if check_mode(mode) == "subject" else 0


def evaluation(data: "MRIData", mode: str, fold: int = 0, *, carve: bool = True) -> Evaluation:
    """The pool, validation and test slices of ``data`` in evaluation ``mode`` (``fold`` in ``subject`` mode).

    ``carve=False`` puts the validation slices back into the pool and leaves validation empty (the thesis's reading
    without a validation carve; the test slices stay the same)."""
    check_mode(mode)
    train, test = data.train, data.test
    groups = None
    if train.groups is not None and test.groups is not None:
        groups = torch.cat([train.groups, test.groups])
    both = Split(torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]), train.ids + test.ids,
                 groups)
    if mode == "slice":
        part = slice_partition(train.labels.numpy(), len(test))
    else:
        if groups is None:
            raise ValueError(f"the subject evaluation needs each slice's person: load {data.source} with "
                             "load_data(..., subjects=True) (the default), or use split='slice'")
        part = subject_partition(both.labels.numpy(), groups.numpy(), fold)
    pick = lambda index: both.subset(torch.from_numpy(index))  # noqa: E731
    if not carve:
        return Evaluation(mode, part.fold, pick(np.sort(np.concatenate([part.pool, part.validation]))),
                          pick(np.empty(0, np.int64)), pick(part.test))
    return Evaluation(mode, part.fold, pick(part.pool), pick(part.validation), pick(part.test))
