"""The leakage audit: how much of a source's test split is already in its train split, person by person and pixel
by pixel.

``leakage_audit(data)`` is one call that returns three tables:

- ``people``: people (groups recovered by :mod:`mri_synth.data.subjects`) per class and per split, and how many have
  slices in both splits (a split by slice puts every person of the real data in both);
- ``one_nn``: the accuracy of a raw-pixel 1-nearest-neighbour lookup of each test slice among the train slices
  (cosine of mean-centred pixels), from all of train and from stratified subsets of it, with the share of test
  slices whose nearest train slice is the same person;
- ``nearest``: per test slice, its highest similarity to a train slice of its own class and of any other class.

A lookup that reads no anatomy beats every trained classifier when the test slices' neighbours sit in train: that is
the number to read first. Figures are drawn by :func:`mri_synth.analysis.plots.plot_nearest_train_similarity` and
:func:`mri_synth.analysis.plots.plot_person_slices`; person-disjoint evaluation is left to ``study``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from mri_synth.data.sampling import stratified_sample
from mri_synth.data.subjects import CHUNK, pixel_features, recover_subjects
from mri_synth.data.types import CLASS_NAMES, MRIData, check_fraction


@dataclass(frozen=True, eq=False)
class LeakageAudit:
    """The audit's tables (see the module docstring); ``summary()`` is the few lines ``mri-synth data`` prints."""

    people: pd.DataFrame
    one_nn: pd.DataFrame
    nearest: pd.DataFrame

    def summary(self) -> str:
        both = self.people.loc["all"]
        lines = [f"people: {both['people']} ({both['in_both_splits']} with slices in both train and test)"]
        for row in self.one_nn.itertuples():
            lines.append(f"1-NN pixel accuracy of test from {row.train_fraction:.0%} of train ({row.train_slices} "
                         f"slices): {row.accuracy:.3f}; nearest train slice is the same person for "
                         f"{row.same_person:.3f}")
        median = self.nearest[["same_class", "other_class"]].median()
        lines.append(f"median nearest-train similarity of a test slice: same class {median['same_class']:.3f}, "
                     f"other classes {median['other_class']:.3f}")
        return "\n".join(lines)


def _groups(data: MRIData) -> tuple[np.ndarray, np.ndarray]:
    if data.train.groups is None or data.test.groups is None:
        subjects = data.subjects if data.subjects is not None else recover_subjects(data)
        return subjects.train_groups, subjects.test_groups
    return data.train.groups.numpy(), data.test.groups.numpy()


def people_table(data: MRIData) -> pd.DataFrame:
    """People per class and split, people with slices in both splits, and slices per person (min-max)."""
    train_groups, test_groups = _groups(data)
    groups = np.concatenate([train_groups, test_groups])
    labels = torch.cat([data.train.labels, data.test.labels]).numpy()
    in_train, in_test = set(train_groups.tolist()), set(test_groups.tolist())
    rows = {}
    for name, mask in [*((n, labels == c) for c, n in enumerate(CLASS_NAMES)), ("all", np.ones(len(labels), bool))]:
        people = set(groups[mask].tolist())
        sizes = np.bincount(groups)[sorted(people)] if people else np.zeros(1, int)
        low, high = sizes.min(), sizes.max()
        rows[name] = {"people": len(people), "in_train": len(people & in_train), "in_test": len(people & in_test),
                      "in_both_splits": len(people & in_train & in_test),
                      "slices_per_person": f"{low}" if low == high else f"{low}-{high}"}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "class"
    return table


def _features(images: torch.Tensor, pool: int) -> torch.Tensor:
    # in chunks, so the float copies of the images never all exist at once
    return torch.cat([pixel_features(images[s:s + CHUNK], pool) for s in range(0, len(images), CHUNK)])


def leakage_audit(data: MRIData, fractions: Sequence[float] = (1.0, 0.3), *, seed: int = 0, pool: int = 1
                  ) -> LeakageAudit:
    """People per split, raw-pixel 1-NN accuracy of the test split, and nearest-train similarities.

    Args:
        data: a source with both splits (``Split.groups`` filled by ``load_data``, else recovered here).
        fractions: shares of the train split the 1-NN lookup searches, each a stratified sample by slice
            (``data.stratified_sample`` with ``seed``).
        seed: the samples' seed.
        pool: average-pool factor before comparison; 1 compares every pixel.

    Returns:
        The :class:`LeakageAudit` tables.
    """
    fractions = [check_fraction(f, "each of fractions") for f in fractions]
    if len(data.train) == 0 or len(data.test) == 0:
        raise ValueError("the audit needs slices in both splits: this source has an empty train or test split")
    train_groups, test_groups = _groups(data)
    train_labels, test_labels = data.train.labels, data.test.labels
    columns = []  # per fraction: the train slices searched
    for f in fractions:
        mask = torch.zeros(len(data.train), dtype=torch.bool)
        mask[stratified_sample(train_labels, f, seed)] = True
        columns.append(mask)
    class_masks = [train_labels == c for c in range(len(CLASS_NAMES))]
    nearest_index = torch.empty(len(fractions), len(data.test), dtype=torch.long)
    nearest_any = torch.empty(len(data.test), dtype=torch.long)  # over all of train
    best = torch.full((len(data.test), len(CLASS_NAMES)), float("nan"))  # best similarity to each train class
    with torch.no_grad():
        train = _features(data.train.images, pool)
        for start in range(0, len(data.test), CHUNK):
            sim = pixel_features(data.test.images[start:start + CHUNK], pool) @ train.T
            stop = start + len(sim)
            nearest_any[start:stop] = sim.argmax(1)
            for k, mask in enumerate(columns):
                nearest_index[k, start:stop] = sim.masked_fill(~mask, -3.0).argmax(1)
            for c, mask in enumerate(class_masks):
                if mask.any():
                    best[start:stop, c] = sim[:, mask].amax(1)
    rows = []
    for f, mask, index in zip(fractions, columns, nearest_index):
        rows.append({"train_fraction": f, "train_slices": int(mask.sum()),
                     "accuracy": (train_labels[index] == test_labels).double().mean().item(),
                     "same_person": float((train_groups[index.numpy()] == test_groups).mean())})
    own = best.gather(1, test_labels[:, None])[:, 0]
    others = best.scatter(1, test_labels[:, None], float("nan"))
    nearest = pd.DataFrame({
        "id": data.test.ids, "label": test_labels.numpy(), "person": test_groups,
        "same_class": own.numpy(), "other_class": np.nanmax(others.numpy(), axis=1),
        "nearest_is_same_person": train_groups[nearest_any.numpy()] == test_groups,
    })
    return LeakageAudit(people_table(data), pd.DataFrame(rows), nearest)
