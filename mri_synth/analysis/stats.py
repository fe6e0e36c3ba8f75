"""Statistics of a study: per-setting summaries with bootstrap intervals, Holm's adjustment, the thesis's medians.

Reads the study runner's tidy results table (one row per trial x metric, with the runner's column names) and
never trains or loads anything itself. It provides

* :func:`summarize`: per setting (group-by columns) the median and the mean of a metric, each with a
  bootstrap confidence interval;
* :func:`holm_adjust`: Holm's step-down adjustment of a family's p-values;
* :func:`thesis_comparison`: the thesis's CNN medians beside ours;
* the helpers the analysis shares: :func:`is_lower_better`, :func:`metric_rows`, :func:`require_columns`,
  :func:`setting_columns`, :func:`with_method`.

Comparisons of arms (paired by repeat, declared or exploratory, Holm-adjusted) are
:func:`mri_synth.analysis.contrasts.paired_contrasts`'s, the package's one such function. Figures are left to
:mod:`mri_synth.analysis.plots`; running trials and writing the table to :mod:`mri_synth.study`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

# Which direction is "better" for each metric the runner writes; recall_<class> is handled by prefix.
LOWER_IS_BETTER: dict[str, bool] = {
    "test_loss": True, "best_test_loss": True, "train_loss": True, "ece": True, "train_time_s": True,
    "val_loss": True, "accuracy": False, "balanced_accuracy": False, "macro_f1": False, "dementia_auc": False,
    "dementia_auc_person": False, "person_accuracy": False, "val_dementia_auc": False,
}

THESIS_CNN_MEDIANS = pd.DataFrame(
    {
        "thesis_setting": ["100% real", "30% real", "30% real + 70% DALL-E 2 synthetic"],
        "real_fraction": [1.0, 0.3, 0.3],
        "synthetic_fraction": [0.0, 0.0, 0.7],
        # "generative" matches any generator (diffusion, openai, ...), not the repeat control.
        "synthetic": ["none", "none", "generative"],
        # Median held-out cross-entropy over 100 runs, thesis section 7.1 (0.176023, 0.219863, 0.174202).
        "thesis_median": [0.176023, 0.219863, 0.174202],
    }
)
"""The thesis's headline numbers: basic CNN, median held-out loss over 100 runs, no classical augmentation."""

_NOT_GENERATIVE = ("none", "repeat")


GRID_COLUMNS = ("split", "protocol", "budget", "epochs", "max_steps", "batch_size", "lr", "weight_decay", "input_size",
                "precision", "validation", "carry", "pretrained", "generator")
"""Spec columns that make a grid: trials that differ in any of them are never pooled into one summary or pair."""


def setting_columns(rows: pd.DataFrame, by: Sequence[str], *, exclude: Sequence[str] = ()) -> list[str]:
    """``by`` plus every grid column that varies within a group of ``by``.

    A results folder may hold several grids (say 6 and 10 epochs, or two diffusion presets); grouping by these
    columns too keeps each grid's trials apart instead of pooling them into one median without a word.
    """
    by = list(by)
    grouped = rows.groupby(by, dropna=False) if by else None
    extra = []
    for column in GRID_COLUMNS:
        if column in rows.columns and column not in by and column not in exclude:
            varies = (grouped[column].nunique(dropna=False).max() if grouped is not None
                      else rows[column].nunique(dropna=False))
            if varies > 1:
                extra.append(column)
    return by + extra


def is_lower_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (loss, ECE, time) or worse (accuracy, recall, F1).

    Raises:
        ValueError: for a metric this module does not know; add it to :data:`LOWER_IS_BETTER` then.
    """
    metric = metric.removesuffix("_last")  # the same metric at the last step instead of the chosen checkpoint
    if metric in LOWER_IS_BETTER:
        return LOWER_IS_BETTER[metric]
    if metric.startswith("recall_"):
        return False
    raise ValueError(
        f"unknown metric {metric!r}: cannot tell whether lower is better; "
        "add it to mri_synth.analysis.stats.LOWER_IS_BETTER (True where lower is better)"
    )


def require_columns(table: pd.DataFrame, names: Sequence[str], what: str = "results table") -> None:
    """Raise a ValueError naming the missing columns and how to map them, if any of ``names`` is absent."""
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise ValueError(
            f"the {what} lacks column(s) {missing}; it has {list(table.columns)}. Rename them to the runner's "
            "column names (mri_synth.study.runner writes them)"
        )


def arch_title(table: pd.DataFrame, arch: str | None) -> str:
    """``arch`` with `` (from scratch)`` or `` (ImageNet-pretrained)`` from its rows' ``pretrained`` column (the thesis
    fine-tuned pretrained ResNet-18 and ViT; a from-scratch run says so wherever it is shown); plain when mixed or
    unknown, empty for no architecture."""
    if not arch:
        return ""
    rows = table[table["arch"].astype(str) == arch] if "arch" in table else table
    kinds = frozenset(rows["pretrained"].astype(str)) if "pretrained" in rows else frozenset()
    return arch + {frozenset({"no"}): " (from scratch)", frozenset({"yes"}): " (ImageNet-pretrained)"}.get(kinds, "")


def metric_rows(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of one metric, with a clear error if the metric is absent."""
    require_columns(results, ["metric", "value"])
    rows = results[results["metric"] == metric]
    if rows.empty:
        available = sorted(results["metric"].astype(str).unique())
        raise ValueError(f"no rows with metric == {metric!r}; the table has {available}")
    return rows


def with_method(results: pd.DataFrame, *, name: str = "method") -> pd.DataFrame:
    """A copy of ``results`` with a column naming what a policy does, without its real fraction.

    ``policy`` labels such as "30% real + 70% diffusion" change with the fraction; curves over real fractions
    need one label per arm instead: "real only", "+ diffusion", "+ diffusion (Mild_Demented+...)",
    "+ repeat", "+ autoaugment", "+ diffusion + autoaugment".
    """
    require_columns(results, ["synthetic", "augment", "synthetic_classes"])
    synthetic = results["synthetic"].astype(str)
    classes = results["synthetic_classes"].astype(str)
    augment = results["augment"].astype(str)
    synthetic_part = ("+ " + synthetic).where(synthetic != "none", "")
    synthetic_part = synthetic_part.where((classes == "all") | (synthetic == "none"),
                                          synthetic_part + " (" + classes + ")")
    augment_part = ("+ " + augment).where(augment != "none", "")
    label = (synthetic_part + " " + augment_part).str.strip()
    return results.assign(**{name: label.where(label != "", "real only")})


def bootstrap_interval(
    values: np.ndarray, statistic: str = "median", *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median or mean of ``values`` (NaN for fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    if values.size < 2:
        return float("nan"), float("nan")
    function = np.median if statistic == "median" else np.mean
    # Percentile rather than BCa: BCa is undefined for the tied, discrete values small repeats produce.
    result = sps.bootstrap((values,), function, n_resamples=n_resamples, confidence_level=confidence,
                           method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _centres(values: np.ndarray, suffix: str, **bootstrap) -> dict[str, float]:
    """Median and mean of ``values`` with their bootstrap intervals, keyed median<suffix>, median<suffix>_lo..."""
    out = {}
    for statistic, function in (("median", np.median), ("mean", np.mean)):
        low, high = bootstrap_interval(values, statistic, **bootstrap)
        out.update({f"{statistic}{suffix}": float(function(values)), f"{statistic}{suffix}_lo": low,
                    f"{statistic}{suffix}_hi": high})
    return out


def summarize(
    results: pd.DataFrame,
    metric: str = "test_loss",
    *,
    by: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    min_repeats: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Median and mean of ``metric`` per setting, each with a bootstrap confidence interval.

    Args:
        results: the runner's long results table.
        metric: which metric to summarise (e.g. ``test_loss``).
        by: the columns that define a setting; default (arch, policy, real_fraction). Grid columns that vary
            within a setting (epochs, budget, generator, ...: :data:`GRID_COLUMNS`) are added, never pooled.
        confidence: coverage of the intervals.
        n_resamples: bootstrap resamples per interval.
        min_repeats: settings with fewer repeats raise; pass 1 to get NaN intervals for them instead.
        seed: seed of the bootstrap resampling, so a summary is reproducible.

    Returns:
        One row per setting: the ``by`` columns, ``metric``, ``n``, ``median``, ``median_lo``, ``median_hi``,
        ``mean``, ``mean_lo``, ``mean_hi``, ``std``, ``q25``, ``q75``.

    Raises:
        ValueError: missing columns or metric, or a setting with fewer than ``min_repeats`` repeats.
    """
    by = list(by) if by is not None else ["arch", "policy", "real_fraction"]
    rows = metric_rows(results, metric)
    require_columns(rows, by)
    by = setting_columns(rows, by)
    sizes = rows.groupby(by, sort=True, dropna=False).size()
    thin = sizes[sizes < min_repeats]
    if len(thin):
        raise ValueError(
            f"{len(thin)} setting(s) have fewer than {min_repeats} repeats of {metric!r} "
            f"(first: {dict(zip(by, np.atleast_1d(thin.index[0])))} with {int(thin.iloc[0])}); run more seeds, "
            "or pass min_repeats=1 to summarise them with NaN intervals"
        )
    records = []
    for key, group in rows.groupby(by, sort=True, dropna=False):
        values = group["value"].to_numpy(dtype=float)
        records.append({
            **dict(zip(by, key if isinstance(key, tuple) else (key,))), "metric": metric, "n": values.size,
            **_centres(values, "", confidence=confidence, n_resamples=n_resamples, seed=seed),
            "std": float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
            "q25": float(np.quantile(values, 0.25)), "q75": float(np.quantile(values, 0.75)),
        })
    return pd.DataFrame.from_records(records)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of p-values for multiple comparisons (NaN entries stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    steps = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def thesis_comparison(
    results: pd.DataFrame,
    metric: str = "test_loss",
    *,
    arch: str = "cnn",
    **options,
) -> pd.DataFrame:
    """The thesis's CNN medians beside this study's medians of the matching settings.

    A setting matches on real fraction, synthetic fraction and synthetic kind (any generator for the thesis's
    DALL-E 2 arm, never the repeat control), with no classical augmentation and synthetic images for all
    classes. Thesis settings this study did not run appear with empty columns of ours.

    Args:
        results: the runner's long results table.
        metric: our metric set beside the thesis's median held-out loss (``test_loss``, the final epoch's).
        arch: our architecture to match with the thesis's basic CNN.
        **options: passed to :func:`summarize` (confidence, n_resamples, min_repeats, seed).

    Returns:
        One row per (thesis setting, our matching policy): ``thesis_setting``, ``thesis_median``,
        ``policy``, ``synthetic``, ``n``, ``median``, ``median_lo``, ``median_hi``, ``ratio`` (ours / thesis).
    """
    require_columns(results, ["arch", "real_fraction", "synthetic_fraction", "synthetic", "augment",
                              "synthetic_classes", "policy"])
    plain = results[(results["arch"] == arch) & (results["augment"] == "none")
                    & (results["synthetic_classes"] == "all")]
    by = ["policy", "synthetic", "real_fraction", "synthetic_fraction"]
    ours = (summarize(plain, metric, by=by, **options) if not plain.empty
            else pd.DataFrame(columns=[*by, "n", "median", "median_lo", "median_hi"]))
    records = []
    for thesis in THESIS_CNN_MEDIANS.itertuples(index=False):
        kind = ours["synthetic"].astype(str)
        same_kind = ~kind.isin(_NOT_GENERATIVE) if thesis.synthetic == "generative" else kind == thesis.synthetic
        match = ours[same_kind
                     & np.isclose(ours["real_fraction"].astype(float), thesis.real_fraction)
                     & np.isclose(ours["synthetic_fraction"].astype(float), thesis.synthetic_fraction)]
        base = {"thesis_setting": thesis.thesis_setting, "thesis_median": thesis.thesis_median}
        if match.empty:
            records.append({**base, "policy": None, "synthetic": None, "n": 0, "median": np.nan,
                            "median_lo": np.nan, "median_hi": np.nan})
        grid = [col for col in ours.columns if col in GRID_COLUMNS]  # present when the table holds several grids
        for row in match.to_dict("records"):
            records.append({**base, **{col: row[col] for col in grid}, "policy": row["policy"],
                            "synthetic": row["synthetic"], "n": row["n"],
                            "median": row["median"], "median_lo": row["median_lo"], "median_hi": row["median_hi"]})
    table = pd.DataFrame.from_records(records)
    table["ratio"] = table["median"] / table["thesis_median"]
    return table
