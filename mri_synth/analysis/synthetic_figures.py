"""Figures of synthetic images: real/synthetic pairs (the thesis's Figure 2.2), the fidelity checks, and each source's
outcome against its FD (Figure 7.3).

Each function takes tensors or the tidy tables of :mod:`mri_synth.analysis.fidelity` and returns a matplotlib
figure; saving (PNG and PDF) is ``mri_synth.analysis.plots.save_figure``'s, the image grid
``mri_synth.analysis.plots``'.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from mri_synth.analysis.contrasts import PRIMARY
from mri_synth.analysis.intervals import median_interval
from mri_synth.analysis.plots import PANEL_SIZE, image_grid, new_figure
from mri_synth.data.types import CLASS_NAMES


def real_synthetic_pairs(real_images: torch.Tensor, real_labels: torch.Tensor, real_ids: Sequence[str],
                         synthetic_images: torch.Tensor, synthetic_source_ids: Sequence[str], *, per_class: int = 2,
                         variants: int = 3) -> Figure:
    """Rows of a real slice followed by up to ``variants`` of its variations, ``per_class`` rows per class.

    Sources are taken in the order given, first those with the most variations; a class without variations of
    any of its sources is left out.
    """
    by_source: dict[str, list[int]] = {}
    for i, s in enumerate(synthetic_source_ids):
        by_source.setdefault(s, []).append(i)
    tiles, titles = [], []
    for c, name in enumerate(CLASS_NAMES):
        members = [i for i, (y, rid) in enumerate(zip(real_labels.tolist(), real_ids)) if y == c and rid in by_source]
        members.sort(key=lambda i: -len(by_source[real_ids[i]]))
        for i in members[:per_class]:
            made = by_source[real_ids[i]][:variants]
            blank = [torch.zeros_like(real_images[i])] * (variants - len(made))
            tiles += [real_images[i], *(synthetic_images[j] for j in made), *blank]
            titles += [f"real {name.replace('_', ' ')}"] + [f"synthetic {k + 1}" for k in range(len(made))] + \
                [""] * len(blank)
    if not tiles:
        raise ValueError("no synthetic image is a variation of any of these real images; pass the real split the "
                         "variations were made from (its ids must match their source ids)")
    return image_grid(torch.stack(tiles), titles, ncols=variants + 1)


def plot_intensity_histograms(table: pd.DataFrame) -> Figure:
    """One panel per class: the intensity density of real vs synthetic pixels (from ``intensity_histograms``)."""
    classes = [c for c in CLASS_NAMES if c in set(table["class"])]
    fig = new_figure(PANEL_SIZE[0] * 0.8 * len(classes), PANEL_SIZE[1] * 0.8)
    axes = fig.subplots(1, len(classes), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, classes):
        sns.lineplot(data=table[table["class"] == name], x="intensity", y="density", hue="kind", ax=ax,
                     hue_order=["real", "synthetic"], legend=ax is axes[-1])
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("pixel intensity (background left out)")
    return fig


def plot_nearest_real(table: pd.DataFrame) -> Figure:
    """Distance to the nearest real training image: synthetic images vs real ones (from ``nearest_real``)."""
    fig = new_figure(*PANEL_SIZE)
    ax = fig.subplots()
    sns.histplot(data=table, x="distance", hue="kind", hue_order=["real", "synthetic"], stat="density",
                 common_norm=False, element="step", ax=ax)
    ax.set_xlabel("pixel RMSE to the nearest real training image (0-255)")
    ax.set_title("Memorisation check: copies would sit near 0")
    return fig


def plot_classifier_labels(table: pd.DataFrame) -> Figure:
    """Heatmap of how a real-trained classifier labels synthetic images (from ``classifier_labels``)."""
    fig = new_figure(PANEL_SIZE[0] * 1.2, PANEL_SIZE[1])
    ax = fig.subplots()
    short = [c.replace("_Demented", "") for c in table.columns]
    sns.heatmap(table.set_axis(short, axis=1).set_axis([c.replace("_Demented", "") for c in table.index]),
                annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", ax=ax, cbar=False)
    ax.set_xlabel("labelled as (classifier trained on real images)")
    ax.set_ylabel("made as")
    return fig


OUTCOME_LABELS = {"test_loss": "slice: four-way test cross-entropy (lower is better)",
                  "dementia_auc_person": "subject: dementia vs none AUC per person (higher is better)"}


BASELINE = "30% real"
"""The arm every added source is added to (Figure 7.3's reference line)."""


def _repeats(n: int) -> str:
    return f"{n} repeat" + ("" if n == 1 else "s")


def outcome_against_fd(results: pd.DataFrame, fidelity: pd.DataFrame, *, arch: str = "cnn") -> Figure:
    """The thesis-style Figure 7.3: for every source of added images, each evaluation's primary readout against the
    images' FD to real validation slices; medians over the repeats with their order-statistic intervals both ways.
    Where the results hold the 30% real arm (``policy``, ``split``), its median and interval are the dashed line and
    grey band every source is read against (it adds nothing, so it has no FD), over the repeats the sources were
    measured in where both tables have ``seed``.

    Args:
        results: the runner's long results table (``trial_key``, ``split``, ``metric``, ``value``, ``arch``).
        fidelity: one row per trial (``trial_key``, ``split``, ``source``, ``fd``), as
            ``benchmarks/source_fidelity.py`` writes it.
    """
    rows, joined = _outcomes(results, fidelity, arch)
    splits = [s for s in PRIMARY if s in set(joined.split)]
    fig = new_figure(PANEL_SIZE[0] * 1.4 * len(splits), PANEL_SIZE[1] * 1.3)
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    sources = sorted(joined.source.unique())
    colours = dict(zip(sources, sns.color_palette("tab10", len(sources))))
    for ax, split in zip(axes, splits):
        baseline = rows[(rows.policy == BASELINE) & (rows.split == split) & (rows.metric == PRIMARY[split])] \
            if {"policy", "split"} <= set(rows.columns) else rows.iloc[:0]
        if len(baseline) and "seed" in baseline and "seed" in joined:  # the repeats the sources were measured in
            baseline = baseline[baseline.seed.isin(joined[joined.split == split].seed)]
        if len(baseline):  # the arm nothing is added to: what every source is measured against
            low, high, _ = median_interval(baseline.value)
            ax.axhspan(low, high, color="0.85", zorder=0)
            ax.axhline(baseline.value.median(), color="0.4", linestyle="--", zorder=1,
                       label=f"{BASELINE}, nothing added ({_repeats(len(baseline))}; no FD)")
        for source, group in joined[joined.split == split].groupby("source"):
            (x_lo, x_hi, _), (y_lo, y_hi, _) = median_interval(group.fd), median_interval(group.value)
            x, y = group.fd.median(), group.value.median()
            ax.errorbar(x, y, xerr=[[x - x_lo], [x_hi - x]], yerr=[[y - y_lo], [y_hi - y]], fmt="o", capsize=3,
                        color=colours[source], label=f"{source} ({_repeats(len(group))})")
        ax.set_xscale("log")  # FDs from about 0.5 (real slices) to hundreds (pixel-space blobs)
        ax.set_xlabel("FD of the added images to real validation slices (feature CNN of latent_fidelity.md)")
        ax.set_ylabel(OUTCOME_LABELS[PRIMARY[split]])
        ax.set_title(f"{arch}, {split} evaluation")
        # below the panel: inside, the legend would hide the long intervals of some source or other
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return fig


def _outcomes(results: pd.DataFrame, fidelity: pd.DataFrame, arch: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the architecture's primary-readout rows, the fidelity rows joined to their trial's readout ``value``)."""
    rows = results[(results.arch == arch) & results.metric.isin(PRIMARY.values())]
    joined = fidelity.merge(rows[["trial_key", "metric", "value"]], on="trial_key")
    joined = joined[[PRIMARY.get(s) == m for s, m in zip(joined.split, joined.metric)]]
    if joined.empty:
        raise ValueError("no trial of the fidelity table is in the results (match them by trial_key): measure the "
                         "recorded trials with benchmarks/source_fidelity.py")
    return rows, joined


TWO_BY_TWO = {  # source prefix -> (blur: through an autoencoder, new content: images outside the 30% subset)
    "repeat": ("no", "no"), "reconstruct_own": ("yes", "no"), "reconstruct_other": ("yes", "yes"),
    "real": ("no", "yes"), "diffusion": ("generated", "variations"), "pixel_diffusion": ("generated", "variations"),
}
"""Issue 23's two-by-two reading: which added source has the generator's blur, and which brings new content."""


def source_table(results: pd.DataFrame, fidelity: pd.DataFrame, *, arch: str = "cnn") -> pd.DataFrame:
    """Figure 7.3 as a table: per evaluation and source of added images, its place in the two-by-two reading
    (:data:`TWO_BY_TWO`), the readout's median [order-statistic interval] over the repeats measured, and the
    images' medians of FD, label fidelity and PSNR/SSIM to their own source (blank where the image is its source).
    """
    _, joined = _outcomes(results, fidelity, arch)
    rows = []
    for (split, source), group in joined.groupby(["split", "source"], sort=True):
        low, high, _ = median_interval(group.value)
        blur, content = TWO_BY_TWO.get(source.split(" ")[0], ("", ""))
        rows.append({"evaluation": split, "source": source, "blur": blur, "new content": content,
                     "repeats": len(group), "readout": OUTCOME_LABELS[PRIMARY[split]],
                     "median [interval]": f"{group.value.median():.3f} [{low:.3f}, {high:.3f}]",
                     "FD": group.fd.median(), "label fidelity": group.label_fidelity.median(),
                     "PSNR (dB)": group.psnr.median(), "SSIM": group.ssim.median()})
    return pd.DataFrame(rows).set_index(["evaluation", "source"])
