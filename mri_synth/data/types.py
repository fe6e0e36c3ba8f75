"""The dataset's types and fixed facts, a leaf of the package: its classes, its image size, a decoded split.

Every layer (data loading, models, generators, Grad-CAM, analysis) reads these from here, so no module needs the
data loader just to know how many classes there are or what a split holds. Loading, caching and sampling the images
are left to the other modules of :mod:`mri_synth.data`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

CLASS_NAMES: tuple[str, ...] = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
"""Class names in the hub's label-id order: 0 Mild, 1 Moderate, 2 Non, 3 Very mild (``Falah/Alzheimer_MRI``)."""

NUM_CLASSES: int = len(CLASS_NAMES)
"""Number of classes, the width of every classifier's output and of the diffusion model's class embedding."""

IMAGE_SIZE: int = 128
"""Height and width in pixels of every image the study stores, real or synthetic (grayscale, one channel)."""


class DataSourceError(ValueError):
    """A data source cannot be read; the message says what is wrong and how to fix it."""


def _class_key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_CLASS_BY_KEY = {_class_key(n): i for i, n in enumerate(CLASS_NAMES)}


def class_id(folder_name: str) -> int:
    """Map a class folder name (any spelling variant of the hub's names) to the hub's class id."""
    key = _class_key(folder_name)
    if key not in _CLASS_BY_KEY:
        raise DataSourceError(
            f"unknown class folder {folder_name!r}: expected one of {', '.join(CLASS_NAMES)} "
            "(spelling variants such as 'NonDemented' or 'Non Demented' are accepted); rename or remove the folder"
        )
    return _CLASS_BY_KEY[key]


def is_class_folder(name: str) -> bool:
    """Whether a folder name is one of the classes (any spelling variant ``class_id`` accepts)."""
    return _class_key(name) in _CLASS_BY_KEY


@dataclass(frozen=True, eq=False)
class Split:
    """One decoded split: images, labels, a stable id and (when known) a person id per image, all index-aligned.

    ``groups`` holds each slice's person as recovered from the pixels (``subjects``), the same id in both splits of
    a source; ``None`` where nobody recovered them (a split built by hand).
    """

    images: torch.Tensor  # uint8 [N, 1, H, W]
    labels: torch.Tensor  # int64 [N]
    ids: tuple[str, ...]
    groups: torch.Tensor | None = None  # int64 [N]: person id per slice

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"images must be uint8 [N,1,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if not (len(self.images) == len(self.labels) == len(self.ids)):
            raise ValueError(
                f"images, labels and ids differ in length: {len(self.images)}, {len(self.labels)}, {len(self.ids)}"
            )
        if self.groups is not None and (self.groups.dtype != torch.int64 or self.groups.shape != self.labels.shape):
            raise ValueError(
                f"groups must be int64 [N] with N = {len(self.labels)} (one person id per image), "
                f"got {self.groups.dtype} {tuple(self.groups.shape)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: torch.Tensor | Sequence[int]) -> "Split":
        """The images at ``index`` (in that order)."""
        index = torch.as_tensor(index, dtype=torch.long)
        groups = None if self.groups is None else self.groups[index]
        return Split(self.images[index], self.labels[index], tuple(self.ids[i] for i in index.tolist()), groups)

    def class_counts(self) -> list[int]:
        """Number of images of each class, in class-id order."""
        return torch.bincount(self.labels, minlength=NUM_CLASSES).tolist()


@dataclass(frozen=True, eq=False)
class Subjects:
    """The people recovered from one source: a group id and a chain position per slice, and what was found.

    Arrays are over all slices, train first then test (``n_train`` of them). Group ids are numbered 0.. by the
    first slice of each group in that order; ``positions`` is a slice's place along its person's chain (0 at the
    end that comes first in that order), or -1 where the group's graph is not a simple chain.
    """

    groups: np.ndarray  # int64 [N]
    positions: np.ndarray  # int64 [N]
    labels: np.ndarray  # int64 [N]
    n_train: int

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1 if len(self.groups) else 0

    @property
    def sizes(self) -> np.ndarray:
        """Slices per group, by group id."""
        return np.bincount(self.groups, minlength=self.n_groups)

    @property
    def group_labels(self) -> np.ndarray:
        """Each group's class (the majority class where a group mixes classes)."""
        counts = np.zeros((self.n_groups, len(CLASS_NAMES)), dtype=np.int64)
        np.add.at(counts, (self.groups, self.labels), 1)
        return counts.argmax(1)

    @property
    def mixed_groups(self) -> list[int]:
        """Ids of groups whose slices carry more than one class."""
        first = self.group_labels[self.groups]
        return sorted(set(self.groups[self.labels != first].tolist()))

    @property
    def clean(self) -> bool:
        """Every group has the same number of slices and one class: the groups look like people."""
        return len(set(self.sizes.tolist())) <= 1 and not self.mixed_groups

    @property
    def train_groups(self) -> np.ndarray:
        return self.groups[: self.n_train]

    @property
    def test_groups(self) -> np.ndarray:
        return self.groups[self.n_train:]

    def summary(self) -> str:
        """One paragraph: how many groups, their sizes, mixed classes, chains, people per class."""
        sizes = ", ".join(f"{n} of {s}" for s, n in sorted(Counter(self.sizes.tolist()).items()))
        per_class = Counter(self.group_labels.tolist())
        classes = ", ".join(f"{CLASS_NAMES[c]} {per_class.get(c, 0)}" for c in range(len(CLASS_NAMES)))
        chains = int((np.bincount(self.groups[self.positions >= 0], minlength=self.n_groups) > 0).sum())
        text = f"{self.n_groups} groups of {len(self.groups)} slices (sizes: {sizes}); people per class: {classes}; "
        text += f"{chains} ordered as chains; {len(self.mixed_groups)} mix classes"
        return text + ("" if self.clean else " -- NOT clean people: treat the groups with care")


@dataclass(frozen=True, eq=False)
class MRIData:
    """The train and test splits of one source, with the source's description, fingerprint and recovered people."""

    train: Split
    test: Split
    source: str
    fingerprint: str
    subjects: Subjects | None = None  # the people found in the pixels (data.subjects), with a report


# ----------------------------------------------------------------------------------------------------- sources


def check_fraction(fraction: float, name: str = "fraction") -> float:
    """Validate a share of a set in (0, 1]."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {fraction!r}: e.g. 0.3 for 30% of the images")
    return float(fraction)

