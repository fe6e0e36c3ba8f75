"""The study's paired contrasts: a family declared before the run, each with intervals that suit few repeats.

A *contrast* is ``"A vs B"`` (two policy labels, e.g. ``"30% real + 70% diffusion vs 30% real"``), paired repeat
by repeat (repeat r of every arm shares the real subset, the seed and, in ``subject`` mode, the test people). For
each contrast, within each evaluation (``split``) and grid, :func:`paired_contrasts` reports

- the mean paired difference A - B with its BCa bootstrap interval (``intervals.bca_mean_interval``);
- the median paired difference with its order-statistic interval and the coverage it reaches;
- where per-image test losses are given (``runner.per_image_losses``), a two-level bootstrap interval of the mean
  per-image loss difference, resampling repeats and test people (both sources of variation);
- the exact Wilcoxon signed-rank p-value, Holm-adjusted over the declared family, and a warning where the number
  of repeats cannot reach the stated level at all.

The primary readout of each evaluation is :data:`PRIMARY`: the thesis's four-way loss in ``slice`` mode, the
per-person dementia AUC in ``subject`` mode. Summaries of single arms are ``stats``'; figures ``plots``'.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from mri_synth.analysis.intervals import bca_mean_interval, median_interval, significance_warning, two_level_interval
from mri_synth.analysis.stats import holm_adjust, is_lower_better, metric_rows, setting_columns

PRIMARY = {"slice": "test_loss", "subject": "dementia_auc_person"}
"""The readout each evaluation leads with."""


def parse_contrast(text: str) -> tuple[str, str]:
    """``"A vs B"`` -> ``(A, B)``, with a message naming the form when the text is not one."""
    a, sep, b = text.partition(" vs ")
    if not sep or not a.strip() or not b.strip():
        raise ValueError(f"a contrast is written 'A vs B' with two policy labels (e.g. '30% real + 70% diffusion vs "
                         f"30% real'), got {text!r}")
    return a.strip(), b.strip()


def paired_contrasts(results: pd.DataFrame, family: Sequence[str], metric: str | None = None, *,
                     per_image: pd.DataFrame | None = None, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Every contrast of ``family`` in every evaluation and grid of ``results``, Holm-adjusted over the family.

    Args:
        results: the runner's long results table.
        family: contrasts ``"A vs B"`` declared before the run (the profile's ``contrasts``).
        metric: the readout; default each evaluation's :data:`PRIMARY`.
        per_image: per-image test losses (``runner.per_image_losses``) for the two-level interval; optional.
        alpha: the level the warning checks.

    Returns:
        One row per (evaluation/grid, contrast): ``split``, ``a``, ``b``, ``metric``, ``n_pairs``, ``mean_diff``,
        ``mean_lo``, ``mean_hi`` (BCa), ``median_diff``, ``median_lo``, ``median_hi``, ``median_coverage``,
        ``p_value``, ``p_holm``, ``a_better_share``, ``image_diff``, ``image_lo``, ``image_hi`` (two-level; NaN
        without ``per_image``), ``warning``.
    """
    pairs = [parse_contrast(c) for c in family]
    records = []
    for split, part in results.groupby("split", sort=True) if "split" in results else [("slice", results)]:
        readout = metric or PRIMARY[split]
        rows = metric_rows(part, readout)
        setting = setting_columns(rows, ["arch"], exclude=("generator",))
        for key, group in rows.groupby(setting, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            for a, b in pairs:
                values = {p: group[group.policy == p].set_index("seed")["value"] for p in (a, b)}
                if values[a].empty or values[b].empty:
                    continue
                paired = pd.concat(values, axis=1, join="inner").dropna()
                diff = (paired[a] - paired[b]).to_numpy()
                records.append({"split": split, **dict(zip(setting, key)), "a": a, "b": b, "metric": readout,
                                **_describe(diff, is_lower_better(readout), seed),
                                **_image_level(per_image, split, key, setting, a, b, seed)})
    table = pd.DataFrame.from_records(records)
    if table.empty:
        raise ValueError(f"no contrast of {list(family)} has both arms in the results: check the policy labels "
                         f"against {sorted(results.policy.unique())}")
    table["p_holm"] = table.groupby([c for c in table.columns if c in ("split", "arch")])["p_value"].transform(
        lambda p: holm_adjust(p.to_numpy()))
    table["warning"] = [significance_warning(n, alpha, len(pairs)) for n in table.n_pairs]
    return table


def _describe(diff: np.ndarray, lower_is_better: bool, seed: int) -> dict[str, float]:
    low, high = bca_mean_interval(diff, seed=seed)
    median_lo, median_hi, coverage = median_interval(diff)
    p = float(sps.wilcoxon(diff).pvalue) if len(diff) > 1 and np.any(diff != 0) else float("nan")
    better = diff < 0 if lower_is_better else diff > 0
    return {"n_pairs": len(diff), "mean_diff": float(diff.mean()), "mean_lo": low, "mean_hi": high,
            "median_diff": float(np.median(diff)), "median_lo": median_lo, "median_hi": median_hi,
            "median_coverage": coverage, "p_value": p, "a_better_share": float(better.mean())}


def _image_level(per_image: pd.DataFrame | None, split: str, key: tuple, setting: list[str], a: str, b: str,
                 seed: int) -> dict[str, float]:
    nan = {"image_diff": float("nan"), "image_lo": float("nan"), "image_hi": float("nan")}
    if per_image is None:
        return nan
    rows = per_image[per_image.split == split] if "split" in per_image else per_image
    for column, value in zip(setting, key):
        rows = rows[rows[column] == value]
    sides = {p: rows[rows.policy == p].set_index(["seed", "test_id"]) for p in (a, b)}
    if sides[a].empty or sides[b].empty:
        return nan
    joined = sides[a][["loss"]].join(sides[b][["loss"]], lsuffix="_a", rsuffix="_b", how="inner").reset_index()
    if "person" not in joined:
        people = per_image.drop_duplicates("test_id").set_index("test_id").get("person")
        joined["person"] = joined.test_id.map(people) if people is not None else joined.test_id
    joined["value"] = joined.loss_a - joined.loss_b
    estimate, low, high = two_level_interval(joined.rename(columns={"seed": "repeat"}), seed=seed, n_resamples=1000)
    return {"image_diff": estimate, "image_lo": low, "image_hi": high}
