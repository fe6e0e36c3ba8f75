"""Every figure the notebooks show, drawn from the study's tidy tables, and the one way figures are saved.

Figures of the study (after the thesis's chapter 7):

* :func:`plot_loss_distribution`: held-out loss of chosen policies as box plots with every repeat on top
  (Figure 7.1: 30% real vs 30% real + 70% synthetic vs 100% real), optionally with the thesis's medians;
* :func:`plot_policies_at_fraction`: every policy at one real fraction (Figure 7.2, all policies at 30%);
* :func:`plot_metric_vs_real_fraction`: median held-out loss against real fraction per method, with its
  bootstrap interval as a band;
* :func:`plot_per_class_recall`: recall per class and policy (the Moderate class has 49 training images);
* :func:`plot_learning_curves`: per-epoch (or per-step) curves from the history table, median over repeats.

Figures of the leakage audit (notebook 01): :func:`plot_person_slices` (one recovered person's slices in order) and
:func:`plot_nearest_train_similarity` (each test slice's nearest train slice, same class vs other classes).

Each draws one panel per architecture when the table holds several. :func:`image_grid` shows images
(notebooks 01-03); :func:`real_vs_synthetic_figure` (the thesis's Grad-CAM panels) and :func:`plot_agreement`
draw what :mod:`mri_synth.training.gradcam` computes (notebook 03); :func:`save_figure` writes PNG and PDF and
:func:`show_figure` also shows the figure in the notebook cell that makes it. Every function returns its figure
already closed in pyplot: nothing accumulates over a loop, and a figure is shown once, where a cell asks for it.
Statistics come from :mod:`mri_synth.analysis.stats`; this module only draws.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mri_synth import paths
from mri_synth.analysis.stats import arch_title, metric_rows, require_columns, summarize, with_method
from mri_synth.data.subjects import person_order

PANEL_SIZE = (5.0, 3.8)
"""Width and height in inches of one panel."""


def save_figure(fig: Figure, name: str, figures_dir: str | os.PathLike | None = None, *, dpi: int = 150
                ) -> list[Path]:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` and ``.pdf``, creating the folder.

    Args:
        fig: the figure to save.
        name: file name without extension, e.g. ``"fig7_1_loss_distribution"``.
        figures_dir: target folder; ``None`` or ``""`` means :func:`mri_synth.paths.figures_dir`.
        dpi: resolution of the PNG.

    Returns:
        The paths written, PNG first.
    """
    if not name or Path(name).name != name or Path(name).suffix in (".png", ".pdf"):
        raise ValueError(f"name must be a bare file name without folder or extension, got {name!r}")
    folder = paths.chosen_dir(figures_dir, paths.figures_dir)
    written = []
    for extension in ("png", "pdf"):
        path = folder / f"{name}.{extension}"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        written.append(path)
    return written


def show_figure(fig: Figure, name: str, figures_dir: str | os.PathLike | None = None) -> None:
    """Save ``fig`` as :func:`save_figure` does and show it in the running notebook cell (outside a kernel: save only).

    It returns nothing, so a cell that ends with this call shows the figure, never the paths of its files, and a call
    inside a loop or a branch shows its figure too.
    """
    save_figure(fig, name, figures_dir)
    from IPython import get_ipython  # IPython comes with every Jupyter kernel; outside one there is nothing to show
    from IPython.display import display

    if getattr(get_ipython(), "kernel", None) is not None:
        display(fig)


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure that pyplot no longer tracks.

    Made through pyplot so that Jupyter's inline backend is set up to render it, then closed so that the
    notebook shows it once (as a cell's value) and loops do not keep every figure alive.
    """
    fig = plt.figure(figsize=(width, height), layout="constrained")
    plt.close(fig)
    return fig


def _panels(table: pd.DataFrame, arch_col: str, nrows: int = 1) -> tuple[Figure, np.ndarray, list]:
    """A figure with one column of panels per architecture in ``table`` (sorted), ``nrows`` rows."""
    archs = sorted(table[arch_col].astype(str).unique()) if arch_col in table.columns else [None]
    fig = new_figure(PANEL_SIZE[0] * len(archs), PANEL_SIZE[1] * nrows)
    # each architecture on its own scale: a ViT's loss can be ten times a CNN's and would flatten its boxes
    axes = fig.subplots(nrows, len(archs), squeeze=False)
    return fig, axes, archs


def boxplot(**kwargs) -> None:
    """seaborn.boxplot without the deprecation warning seaborn 0.13.2 triggers in matplotlib >= 3.11."""
    with warnings.catch_warnings():
        # seaborn passes matplotlib's deprecated ``vert=``; the warning is about seaborn, not about this call.
        warnings.filterwarnings("ignore", message="vert: bool was deprecated", category=DeprecationWarning)
        sns.boxplot(**kwargs)


def _legend_on_last(ax, axes: np.ndarray, outside: bool = False) -> None:
    """One legend per figure, in (``outside``: right of) the top-right panel: the lines are the same in every panel."""
    if ax is axes[0, -1]:
        ax.legend(fontsize="x-small", **({"loc": "upper left", "bbox_to_anchor": (1, 1)} if outside else {}))
    elif ax.get_legend() is not None:
        ax.get_legend().remove()


def as_array(images) -> np.ndarray:
    """A tensor (any device) or array as a NumPy array."""
    return np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)


def _in_arch(table: pd.DataFrame, arch_col: str, arch: str | None) -> pd.DataFrame:
    return table if arch is None else table[table[arch_col].astype(str) == arch]


def plot_loss_distribution(
    results: pd.DataFrame,
    policies: Sequence[str] | None = None,
    metric: str = "test_loss",
    *,
    reference: Mapping[str, float] | None = None,
    reference_label: str = "thesis median",
    title: str | None = None,
) -> Figure:
    """Box plots of ``metric`` per policy with every repeat as a dot (the thesis's Figure 7.1).

    Args:
        results: the runner's long results table.
        policies: the policies to show, in this order; default every policy in the table, by median.
        metric: the metric on the y axis.
        reference: optional policy -> value drawn as a marker beside the box (e.g. the thesis's medians).
        reference_label: legend entry of those markers.
        title: figure title; default names the metric.
    """
    rows = metric_rows(results, metric)
    require_columns(rows, ["policy"])
    policies = (list(policies) if policies is not None
                else list(rows.groupby("policy")["value"].median().sort_values().index))
    unknown = sorted(set(policies) - set(rows["policy"]))
    if unknown:
        raise ValueError(f"policies {unknown} have no {metric!r} rows; the table has {sorted(set(rows['policy']))}")
    rows = rows[rows["policy"].isin(policies)]
    fig, axes, archs = _panels(rows, "arch")
    for ax, arch in zip(axes[0], archs):
        panel = _in_arch(rows, "arch", arch)
        order = [p for p in policies if p in set(panel["policy"])]  # an architecture shows only the arms it ran
        # Boxes lie along the y axis, one row per arm, read top to bottom: arm labels such as
        # "30% real + 70% diffusion (Mild+Moderate)" stay horizontal and the panel keeps its width for the data.
        boxplot(data=panel, x="value", y="policy", order=order, orient="h", ax=ax, color="0.85",
                 showfliers=False, width=0.6)
        sns.stripplot(data=panel, x="value", y="policy", order=order, orient="h", ax=ax, color="tab:blue", size=3,
                      alpha=0.6, jitter=0.2)
        if reference:
            shown = [(order.index(p), v) for p, v in reference.items() if p in order]
            if shown:
                y, x = zip(*shown)
                ax.scatter(x, np.asarray(y) + 0.38, marker="D", color="tab:red", zorder=5, label=reference_label)
                ax.legend(loc="best", fontsize="small")
        ax.set(title=arch_title(rows, arch), ylabel="", xlabel=metric)
        ax.tick_params(axis="y", labelsize="small")
    fig.suptitle(title or f"{_evaluation_prefix(rows)}{metric} over repeats")
    return fig


def _evaluation_prefix(table: pd.DataFrame) -> str:
    """``"slice split: "`` where every row of ``table`` comes from one evaluation, else nothing."""
    splits = table["split"].dropna().unique() if "split" in table.columns else []
    return f"{splits[0]} split: " if len(splits) == 1 else ""


def plot_policies_at_fraction(
    results: pd.DataFrame,
    real_fraction: float = 0.3,
    metric: str = "test_loss",
    **options,
) -> Figure:
    """Every policy trained on ``real_fraction`` of the real images, ordered by median (the thesis's Figure 7.2).

    ``options`` go to :func:`plot_loss_distribution` (reference, title).
    """
    require_columns(results, ["real_fraction"])
    at_fraction = results[np.isclose(results["real_fraction"].astype(float), real_fraction)]
    if at_fraction.empty:
        fractions = sorted(results["real_fraction"].unique())
        raise ValueError(f"no trials at real_fraction={real_fraction}; the table has {fractions}")
    prefix = _evaluation_prefix(at_fraction)
    options.setdefault("title", f"{prefix}{metric} of every policy at {real_fraction:.0%} real")
    return plot_loss_distribution(at_fraction, None, metric, **options)


def plot_metric_vs_real_fraction(
    results: pd.DataFrame,
    metric: str = "test_loss",
    *,
    hue: str = "method",
    confidence: float = 0.95,
) -> Figure:
    """Median ``metric`` against real fraction, one line per ``hue`` value with its bootstrap interval.

    Args:
        results: the runner's long results table.
        metric: the metric on the y axis.
        hue: the column naming the lines; the default ``"method"`` is added with
            :func:`mri_synth.analysis.stats.with_method` (the policy without its real fraction).
        confidence: coverage of the interval drawn as bars and band.
    """
    table = with_method(results, name=hue) if hue == "method" and hue not in results else results
    summary = summarize(table, metric, by=["arch", hue, "real_fraction"], confidence=confidence, min_repeats=1)
    fig, axes, archs = _panels(summary, "arch")
    labels = sorted(summary[hue].astype(str).unique())
    # Shift each line a little sideways so intervals at the same fraction do not hide each other.
    dodge = {label: 0.006 * (i - (len(labels) - 1) / 2) for i, label in enumerate(labels)}
    for ax, arch in zip(axes[0], archs):
        for label, line in _in_arch(summary, "arch", arch).groupby(hue, sort=True):
            line = line.sort_values("real_fraction")
            x = line["real_fraction"].to_numpy(float) + dodge[str(label)]
            low, mid, high = (line[k].to_numpy(float) for k in ("median_lo", "median", "median_hi"))
            # NaN intervals (a single repeat) draw no bar rather than failing.
            errors = np.nan_to_num(np.vstack([mid - low, high - mid]))
            drawn = ax.errorbar(x, mid, yerr=errors, marker="o", capsize=3, label=str(label))
            ax.fill_between(x, low, high, color=drawn.lines[0].get_color(), alpha=0.15)
        ax.set(title=arch_title(table, arch), xlabel="real fraction", ylabel=f"median {metric}")
        ax.legend(fontsize="small")
    fig.suptitle(f"median {metric} ({confidence:.0%} bootstrap interval) against real fraction")
    return fig


def plot_per_class_recall(
    results: pd.DataFrame,
    policies: Sequence[str] | None = None,
    *,
    class_counts: Mapping[str, int] | None = None,
) -> Figure:
    """Recall of each class per policy as box plots over repeats.

    Args:
        results: the runner's long results table (metrics ``recall_<class>``).
        policies: the policies to show, in this order; default all, sorted.
        class_counts: optional class -> number of images, written under each class (e.g. the 49 Moderate).
    """
    require_columns(results, ["metric", "value", "policy"])
    metric = results["metric"].astype(str)
    # the chosen checkpoint's recall per class; the last step's copies (recall_<class>_last) are other readouts
    rows = results[metric.str.startswith("recall_") & ~metric.str.endswith("_last")]
    if rows.empty:
        raise ValueError(f"no recall_<class> rows; the table has metrics {sorted(metric.unique())}")
    rows = rows.assign(**{"class": rows["metric"].astype(str).str.removeprefix("recall_")})
    policies = list(policies) if policies is not None else sorted(rows["policy"].unique())
    rows = rows[rows["policy"].isin(policies)]
    classes = list(pd.unique(rows["class"]))
    fig, axes, archs = _panels(rows, "arch")
    for ax, arch in zip(axes[0], archs):
        boxplot(data=_in_arch(rows, "arch", arch), x="class", y="value", hue="policy", order=classes,
                    hue_order=policies, ax=ax, showfliers=False)
        # wrapped: in panels side by side (07's three architectures), the bare class names run into each other
        ax.set_xticks(range(len(classes)), [name.replace("_Demented", "\nDemented") + (
            f"\n(n={class_counts[name]})" if name in (class_counts or {}) else "") for name in classes])
        ax.set(title=arch_title(rows, arch), xlabel="", ylabel="recall", ylim=(-0.02, 1.02))
        ax.tick_params(axis="x", labelsize="small")
        _legend_on_last(ax, axes, outside=True)  # inside, it would cover the low recalls of the last panel
    fig.suptitle("per-class recall over repeats")
    return fig


def plot_learning_curves(
    history: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    x: str | None = None,
    hue: str | None = None,
    title: str | None = None,
) -> Figure:
    """Learning curves from the per-epoch history: median over repeats with the interquartile band.

    Args:
        history: the runner's history table (key columns + epoch, step, metric, value).
        metrics: one row of panels per metric; default the training and test losses, or validation's where the
            test loss has gaps (``held_out_curve=False``: predicted only at the chosen and last steps).
        x: the x axis column; default ``epoch`` (pass ``"step"`` for a step budget).
        hue: the column naming the lines; default the policy.
        title: figure title; default says what is drawn, and the evaluation where the history holds one.
    """
    x = x or "epoch"
    hue = hue or "policy"
    require_columns(history, ["metric", "value", x, hue], what="history table")
    if metrics is None:
        test = history.loc[history["metric"] == "test_loss", "value"]
        gaps = "val_loss" in set(history["metric"]) and (test.empty or bool(test.isna().any()))
        metrics = ("train_loss", "val_loss" if gaps else "test_loss")
    missing = sorted(set(metrics) - set(history["metric"]))
    if missing:
        raise ValueError(f"history has no {missing}; its metrics are {sorted(set(history['metric']))}")
    fig, axes, archs = _panels(history, "arch", nrows=len(metrics))
    for row, metric in enumerate(metrics):
        for ax, arch in zip(axes[row], archs):
            panel = _in_arch(history[history["metric"] == metric], "arch", arch)
            sns.lineplot(data=panel, x=x, y="value", hue=hue, estimator="median", errorbar=("pi", 50),
                         marker="o", ax=ax)
            # an epoch is one pass over the arm's own training set: at equal steps a 30% arm runs 3.3x the epochs
            ax.set(title=f"{arch_title(history, arch)} {metric}".strip(), ylabel=metric,
                   xlabel="epoch (passes over the arm's own training set)" if x == "epoch" else x)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _legend_on_last(ax, axes)
    fig.suptitle(title or f"{_evaluation_prefix(history)}learning curves: median over repeats, "
                          "band = 25th-75th percentile")
    return fig


def image_grid(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    *,
    panel_inches: float = 1.6,
) -> Figure:
    """A grid of grayscale images, e.g. real slices beside their synthetic variations.

    Args:
        images: uint8 array or tensor ``[N, 1, H, W]`` (or ``[N, H, W]``).
        titles: optional caption per image.
        ncols: images per row.
        panel_inches: size of each image in inches.
    """
    array = as_array(images)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or len(array) == 0:
        raise ValueError(f"images must have shape [N, 1, H, W] or [N, H, W] with N >= 1, got {array.shape}")
    if titles is not None and len(titles) != len(array):
        raise ValueError(f"got {len(titles)} titles for {len(array)} images; give one per image or none")
    ncols = max(1, min(ncols, len(array)))
    nrows = -(-len(array) // ncols)
    fig = new_figure(panel_inches * ncols, panel_inches * nrows + (0.3 * nrows if titles else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index < len(array):
            # Fixed 0-255 range so that brightness compares across panels (no per-image rescaling).
            ax.imshow(array[index], cmap="gray", vmin=0, vmax=255)
            if titles is not None:
                ax.set_title(str(titles[index]), fontsize="small")
    return fig


def plot_person_slices(data, person: int, ncols: int = 8) -> Figure:
    """The slices of one recovered person (``subjects``) in chain order, each captioned with its split.

    Args:
        data: an :class:`mri_synth.data.types.MRIData` (its people recovered by ``load_data``).
        person: the group id, in ``0..n_groups - 1``.
        ncols: slices per row.
    """
    slices, caption = person_order(data, person)
    fig = image_grid(slices.images, [i.split("/")[0] for i in slices.ids], ncols=ncols, panel_inches=1.1)
    fig.suptitle(caption)
    return fig


def plot_nearest_train_similarity(nearest: pd.DataFrame, bins: int = 60) -> Figure:
    """How close each test slice's nearest train slice is: of its own class vs of any other class.

    Args:
        nearest: the audit's per-test-slice table (``audit.leakage_audit(data).nearest``), with columns
            ``same_class`` and ``other_class`` (highest cosine similarity to a train slice of that kind).
        bins: histogram bins over the observed range.
    """
    missing = {"same_class", "other_class"} - set(nearest.columns)
    if missing or nearest.empty:
        raise ValueError(f"nearest must be the audit's non-empty per-test-slice table with columns same_class and "
                         f"other_class (audit.leakage_audit(data).nearest); missing {sorted(missing)}, "
                         f"{len(nearest)} rows")
    values = nearest[["same_class", "other_class"]].to_numpy(dtype=float)
    edges = np.linspace(np.nanmin(values), np.nanmax(values), bins + 1)
    fig = new_figure(*PANEL_SIZE)
    ax = fig.subplots()
    for column, label, color in [("same_class", "nearest train slice of the same class", "C0"),
                                 ("other_class", "nearest train slice of another class", "C3")]:
        x = nearest[column].dropna()
        ax.hist(x, bins=edges, histtype="stepfilled", alpha=0.45, color=color, label=label)
        ax.axvline(x.median(), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("cosine similarity of mean-centred pixels")
    ax.set_ylabel("test slices")
    ax.set_title(f"Test slices vs their nearest train slices (n = {len(nearest)}; dashed: medians)",
                 fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    return fig
