"""Data exploration (notebook 01): class counts, example slices per class, intensity statistics, imbalance.

Tables are pandas DataFrames the notebook shows as they are (nbval compares them); figures are matplotlib figures
saved through ``plots.save_figure``. Loading the data is ``data.load_data``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from mri_synth.analysis.plots import (
    image_grid,
    new_figure,
    plot_nearest_train_similarity,
    plot_person_slices,
    save_figure,
    show_figure,
)
from mri_synth.config import NotebookConfig
from mri_synth.data.audit import leakage_audit
from mri_synth.data.cache import load_data
from mri_synth.data.types import CLASS_NAMES, MRIData, Split

THESIS_TABLE_2_1 = {"train": [724, 49, 2566, 1781], "test": [172, 15, 634, 459]}
"""The thesis's Table 2.1: images per class (Mild, Moderate, Non, Very mild) in each split."""


def class_count_table(data: MRIData) -> pd.DataFrame:
    """Images per class in each split, with totals and each class's share of the training split (Table 2.1)."""
    table = pd.DataFrame(
        {"train": data.train.class_counts(), "test": data.test.class_counts()}, index=list(CLASS_NAMES)
    )
    table["total"] = table["train"] + table["test"]
    table["train_share_%"] = (100 * table["train"] / table["train"].sum()).round(1)
    table.loc["all"] = [table["train"].sum(), table["test"].sum(), table["total"].sum(), 100.0]
    table.index.name = "class"
    return table.astype({"train": int, "test": int, "total": int})


def imbalance_summary(split: Split) -> pd.Series:
    """How uneven the classes are: largest/smallest class ratio, the rarest class and its count."""
    counts = np.array(split.class_counts())
    rare = int(counts.argmin())
    return pd.Series(
        {
            "rarest_class": CLASS_NAMES[rare],
            "rarest_count": int(counts[rare]),
            "largest_class": CLASS_NAMES[int(counts.argmax())],
            "largest_count": int(counts.max()),
            "largest_to_rarest": round(float(counts.max() / counts[rare]), 1),
            "chance_accuracy_majority": round(float(counts.max() / counts.sum()), 3),
        }
    )


def intensity_stats(split: Split, background_level: int = 10) -> pd.DataFrame:
    """Per-class pixel statistics: mean and std of intensity, share of background, mean brain-area intensity.

    ``background_level``: pixels at or below this grey value count as background (the black surround of the slice).
    """
    rows = []
    pixels = split.images.flatten(1).float()
    for c, name in enumerate(CLASS_NAMES):
        x = pixels[split.labels == c]
        if len(x) == 0:
            continue
        foreground = x > background_level
        rows.append(
            {
                "class": name,
                "images": len(x),
                "mean": x.mean().item(),
                "std": x.std().item(),
                "background_%": 100 * (1 - foreground.float().mean().item()),
                "brain_mean": (x * foreground).sum().item() / foreground.sum().item(),
            }
        )
    return pd.DataFrame(rows).set_index("class").round(2)


def example_slices(split: Split, per_class: int = 4, seed: int = 0) -> plt.Figure:
    """A grid of example slices, one row per class (the thesis's Figure 2.1)."""
    gen = torch.Generator().manual_seed(seed)
    picks, titles = [], []
    for c, name in enumerate(CLASS_NAMES):
        members = (split.labels == c).nonzero().flatten()
        chosen = members[torch.randperm(len(members), generator=gen)[:per_class]]
        picks.append(chosen)
        titles += [name.replace("_", " ")] * len(chosen)
    fig = image_grid(split.images[torch.cat(picks)], titles, ncols=per_class)
    fig.suptitle("Example slices per class")
    return fig


def intensity_histograms(split: Split, background_level: int = 10) -> plt.Figure:
    """Per-class histograms of brain-pixel intensity (background excluded), as densities so classes compare."""
    fig = new_figure(6, 3.5)  # not tracked by pyplot: the notebook shows it once, where show_figure asks
    ax = fig.subplots()
    bins = np.arange(background_level + 1, 257, 4)
    for c, name in enumerate(CLASS_NAMES):
        x = split.images[split.labels == c].flatten().numpy()
        x = x[x > background_level]
        if len(x):
            ax.hist(x, bins=bins, density=True, histtype="step", linewidth=1.5, label=name.replace("_", " "))
    ax.set_xlabel("grey value (brain pixels)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


@dataclass(frozen=True)
class ExplorationConfig(NotebookConfig):
    """Settings of notebook 01, checked on construction."""

    examples_per_class: int = 4  # slices per class in the example grid (Figure 2.1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.examples_per_class <= 12:
            raise ValueError(f"examples_per_class must be an int in 1..12, got {self.examples_per_class!r}")


__all__ = ["ExplorationConfig", "class_count_table", "example_slices", "imbalance_summary", "intensity_histograms",
           "intensity_stats", "leakage_audit", "load_data", "plot_nearest_train_similarity", "plot_person_slices",
           "save_figure", "show_figure"]
