"""The study's answer, as notebook 07 and the README show it: both evaluations side by side.

- :func:`by_evaluation`: a results table split into its evaluations (``slice``, ``subject``), in that order.
- :func:`evaluation_summary`: per evaluation, each arm's median of the evaluation's primary readout with its
  order-statistic interval (the thesis's four-way loss in ``slice`` mode, the per-person dementia AUC in
  ``subject`` mode), beside the thesis's medians where the thesis has the setting.
- :func:`plot_two_evaluations`: one figure a reader of the thesis takes in at a glance: the arms at one real
  fraction, ``slice`` on the left with the thesis's medians marked, ``subject`` on the right with chance marked.

Statistics are ``stats``', ``intervals``' and ``contrasts``'; trials are ``runner``'s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mri_synth.analysis.contrasts import PRIMARY
from mri_synth.analysis.intervals import median_interval
from mri_synth.analysis.plots import new_figure
from mri_synth.analysis.stats import THESIS_CNN_MEDIANS, arch_title, metric_rows, setting_columns

LABELS = {"slice": "slice split (the source's; thesis-comparable)", "subject": "subject split (people never seen)"}
READOUT_LABELS = {"test_loss": "four-way test cross-entropy (lower is better)",
                  "dementia_auc_person": "dementia vs none, AUC per person (higher is better)"}


def by_evaluation(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{split: its rows}`` for the evaluations present (``slice`` first); older tables count as ``slice``."""
    if "split" not in results:
        return {"slice": results}
    return {split: results[results.split == split] for split in ("slice", "subject") if (results.split == split).any()}


def evaluation_summary(results: pd.DataFrame, real_fraction: float | None = None) -> pd.DataFrame:
    """Each arm's median primary readout per evaluation (and grid), with its order-statistic interval.

    Returns:
        One row per (evaluation, grid, arm): ``split``, ``policy``, ``real_fraction``, ``metric``, ``n``,
        ``median``, ``median_lo``, ``median_hi``, ``coverage`` and, in ``slice`` mode, ``thesis_median`` where the
        thesis reported the setting (its basic CNN, no augmentation).
    """
    records = []
    for split, part in by_evaluation(results).items():
        rows = metric_rows(part, PRIMARY[split])
        if real_fraction is not None:
            rows = rows[np.isclose(rows.real_fraction.astype(float), real_fraction)]
        by = setting_columns(rows, ["arch", "policy", "real_fraction"], exclude=("generator",))
        for key, group in rows.groupby(by, sort=False):
            values = group.value.dropna().to_numpy()  # an AUC is undefined on a fold without both kinds of people
            low, high, coverage = median_interval(values)
            row = {"split": split, **dict(zip(by, key)), "metric": PRIMARY[split], "n": len(values),
                   "median": float(np.median(values)) if len(values) else np.nan, "median_lo": low, "median_hi": high,
                   "coverage": coverage}
            records.append(row | {"thesis_median": _thesis(group.iloc[0]) if split == "slice" else np.nan})
    return pd.DataFrame.from_records(records)


def architecture_table(results: pd.DataFrame, split: str = "subject") -> pd.DataFrame:
    """Every architecture x arm of one evaluation on its primary readout (``subject``: the per-person dementia AUC on
    people never seen), each cell "median [interval]" over the repeats: a table to read, not a pick of the best cell.

    Rows are arms (100% real first), columns architectures; a cell is empty where that arm was not run. The repeats
    behind each cell and the interval's coverage are in :func:`evaluation_summary`.
    """
    summary = evaluation_summary(results[results.split == split] if "split" in results else results)
    if summary.empty:
        raise ValueError(f"no {split} trials in the results: run the {split} evaluation first")
    summary = summary.sort_values(["real_fraction", "policy"], ascending=[False, True])
    summary["cell"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in
                       zip(summary["median"], summary.median_lo, summary.median_hi)]
    table = summary.pivot_table(index="policy", columns="arch", values="cell", aggfunc="first", sort=False)
    table.index.name, table.columns.name = "arm", None
    return table.fillna("").rename(columns=lambda arch: arch_title(results, arch))


def _thesis(row: pd.Series) -> float:
    if row.get("arch") != "cnn" or row.get("augment", "none") != "none" or row.get("synthetic_classes", "all") != "all":
        return np.nan
    if str(row.get("generator_kind", "")).startswith("diagnostic"):  # a measurement (the reconstruction arms)
        return np.nan
    generative = row.synthetic not in ("none", "repeat")
    for thesis in THESIS_CNN_MEDIANS.itertuples(index=False):
        kind_matches = generative if thesis.synthetic == "generative" else row.synthetic == thesis.synthetic
        if kind_matches and np.isclose(row.real_fraction, thesis.real_fraction) and np.isclose(
                row.synthetic_fraction, thesis.synthetic_fraction):
            return thesis.thesis_median
    return np.nan


def plot_two_evaluations(results: pd.DataFrame, real_fraction: float = 0.3, *, arch: str = "cnn") -> Figure:
    """Every arm at ``real_fraction`` (and 100% real), one point per repeat and the median with its interval:
    the ``slice`` evaluation's loss (the thesis's medians as crosses) beside the ``subject`` evaluation's AUC."""
    if not (results.arch == arch).any():
        raise ValueError(f"no {arch} trials at {real_fraction:.0%} or 100% real to plot: run notebooks 04-06 first")
    summary = evaluation_summary(results[results.arch == arch])
    summary = summary[np.isclose(summary.real_fraction, real_fraction) | np.isclose(summary.real_fraction, 1.0)]
    if summary.empty:
        raise ValueError(f"no {arch} trials at {real_fraction:.0%} or 100% real to plot: run notebooks 04-06 first")
    splits = list(dict.fromkeys(summary.split))
    fig = new_figure(6.2 * len(splits), 0.9 + 0.42 * summary.policy.nunique())
    axes = np.atleast_1d(fig.subplots(1, len(splits), sharey=True))
    order = list(dict.fromkeys(summary.sort_values(["real_fraction", "policy"], ascending=[False, True]).policy))
    for ax, split in zip(axes, splits):
        part = summary[summary.split == split].set_index("policy")
        points = metric_rows(by_evaluation(results[results.arch == arch])[split], PRIMARY[split])
        for y, policy in enumerate(order):
            if policy not in part.index:
                continue
            row = part.loc[[policy]].iloc[0]
            values = points[points.policy == policy].value
            ax.scatter(values, np.full(len(values), y) + 0.18, s=9, color="0.55", zorder=2)
            ax.errorbar(row["median"], y, xerr=[[row["median"] - row.median_lo], [row.median_hi - row["median"]]],
                        fmt="o", color="C0", capsize=3, zorder=3)
            if not np.isnan(row.thesis_median):
                ax.scatter(row.thesis_median, y, marker="x", color="C3", s=45, zorder=4,
                           label="thesis median (100 runs)")
        if split == "subject":
            ax.axvline(0.5, color="0.3", linestyle=":", linewidth=1, label="chance")
        ax.set_yticks(range(len(order)), order)
        ax.set_title(LABELS[split], fontsize="medium")
        ax.set_xlabel(READOUT_LABELS[PRIMARY[split]])
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            unique = dict(zip(labels, handles))
            # the subject panel's lower left, near chance, is where an arm's AUC rarely falls
            ax.legend(unique.values(), unique.keys(), fontsize="small",
                      loc="lower left" if split == "subject" else "best")
    axes[0].invert_yaxis()
    fig.suptitle(f"{arch_title(results, arch)}: each arm's median with its "
                 "order-statistic interval (grey: one repeat each)",
                 fontsize="medium")
    return fig
