"""The study's paired contrasts: a family declared before the run, each with intervals that suit few repeats.

A *contrast* is ``"A vs B"`` (two policy labels, e.g. ``"30% real + 70% diffusion vs 30% real"``), paired repeat
by repeat (repeat r of every arm shares the real subset, the seed and, in ``subject`` mode, the test people). For
each contrast, within each evaluation (``split``) and grid, :func:`paired_contrasts` reports

- the mean paired difference A - B with its BCa bootstrap interval (``intervals.bca_mean_interval``), or in
  ``subject`` mode the corrected t interval that goes with that mode's test (``intervals.corrected_mean_interval``;
  the ``interval`` column names it);
- the median paired difference with its order-statistic interval and the coverage it reaches;
- where per-image test losses are given (``runner.per_image_losses``), a two-level bootstrap interval of the mean
  per-image loss difference, resampling repeats and test people (both sources of variation);
- a p-value, Holm-adjusted over the family: in ``slice`` mode the exact Wilcoxon signed-rank test (with a
  warning where the number of repeats cannot reach the stated level at all); in ``subject`` mode, where repeats r
  and r + 5 share their test, validation and training people and every fold's training people overlap the
  others', Nadeau and Bengio's corrected resampled t-test over the repeats (``intervals.corrected_resampled_t``,
  with n_test/n_train = 1/(k - 1) for the protocol's k = 5 person folds, however many are recorded yet). The
  ``test`` column names the one used;
- the smallest mean difference each contrast could have detected (80% power, two-sided at Holm's strictest level
  alpha / m, from the pairs' spread and the same test's standard error), so "no difference detected" can be read.

It is the package's one function that compares arms. The *declared* family is the profile's ``contrasts``, fixed
before the run; any other reading (a policy against a reference, :func:`against_reference`; the README's
Mild+Moderate arm against 30% real) is passed in a call of its own with ``exploratory=True``: labelled so, and
Holm-corrected over that call's contrasts only.

The primary readout of each evaluation is :data:`PRIMARY`: the thesis's four-way loss in ``slice`` mode, the
per-person dementia AUC in ``subject`` mode. Summaries of single arms are ``stats``'; figures ``plots``'.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from mri_synth.analysis.intervals import (
    bca_mean_interval,
    corrected_mean_interval,
    corrected_resampled_t,
    detectable_difference,
    fold_ratio,
    median_interval,
    significance_warning,
    two_level_interval,
)
from mri_synth.analysis.stats import holm_adjust, is_lower_better, metric_rows, require_columns, setting_columns
from mri_synth.data.subjects import N_FOLDS

PRIMARY = {"slice": "test_loss", "subject": "dementia_auc_person"}
"""The readout each evaluation leads with."""

POWER = 0.8
"""The power at which ``detectable`` is stated."""

WILCOXON = "exact Wilcoxon signed-rank"
CORRECTED_T = "corrected resampled t (Nadeau-Bengio, {k} person folds)"


def parse_contrast(text: str) -> tuple[str, str]:
    """``"A vs B"`` -> ``(A, B)``, with a message naming the form when the text is not one."""
    a, sep, b = text.partition(" vs ")
    if not sep or not a.strip() or not b.strip():
        raise ValueError(f"a contrast is written 'A vs B' with two policy labels (e.g. '30% real + 70% diffusion vs "
                         f"30% real'), got {text!r}")
    return a.strip(), b.strip()


def against_reference(results: pd.DataFrame, reference: str, policies: Sequence[str] | None = None) -> list[str]:
    """The contrasts ``"P vs reference"`` for every other policy of ``results`` (sorted), or for ``policies``.

    Pass them to :func:`paired_contrasts` with ``exploratory=True``: they are not the declared family.

    Raises:
        ValueError: the reference or a named policy has no rows (the message lists the table's policies), or the
            table holds no policy besides the reference.
    """
    require_columns(results, ["policy"])
    available = sorted(results["policy"].astype(str).unique())
    absent = [p for p in [reference, *(policies or [])] if p not in available]
    if absent:
        raise ValueError(f"no rows of policy {absent} in the results; the table's policies are {available}")
    chosen = list(policies) if policies is not None else [p for p in available if p != reference]
    if reference in chosen or not chosen:
        raise ValueError(f"nothing to compare with the reference {reference!r}: name other policies, of {available}")
    return [f"{p} vs {reference}" for p in chosen]


def paired_contrasts(results: pd.DataFrame, family: Sequence[str], metric: str | None = None, *,
                     per_image: pd.DataFrame | None = None, alpha: float = 0.05, seed: int = 0,
                     exploratory: bool = False) -> pd.DataFrame:
    """Every contrast of ``family`` in every evaluation and grid of ``results``, Holm-adjusted over the family.

    Declared contrasts are the profile's family, fixed before the run. Any other reading (a policy against a
    reference, the README's Mild+Moderate arm against 30% real, ...) is run as its own call with
    ``exploratory=True``: its rows are labelled ``"exploratory"`` and Holm corrects over that call's contrasts
    only (within each evaluation and architecture), never pooled with the declared family's.

    A contrast is skipped in an evaluation or grid where either arm has no rows or the arms share no seed (a
    findings block lists it as not run); when no contrast remains at all, a ValueError names the policies that
    have no rows and the table's policies.

    Args:
        results: the runner's long results table (``policy``, ``seed``, ``arch``, ``metric``, ``value``; without
            ``split`` it is read as the ``slice`` evaluation).
        family: contrasts ``"A vs B"``; declared before the run (the profile's ``contrasts``) unless
            ``exploratory``.
        metric: the readout; default each evaluation's :data:`PRIMARY`.
        per_image: per-image test losses (``runner.per_image_losses``) for the two-level interval; optional.
        alpha: the level the warning checks.
        seed: seed of the bootstrap resampling.
        exploratory: label the rows ``"exploratory"`` instead of ``"declared"``.

    Returns:
        One row per (evaluation/grid, contrast): ``split``, ``a``, ``b``, ``family`` (``"declared"`` or
        ``"exploratory"``), ``metric``, ``n_pairs``, ``mean_diff``, ``mean_lo``, ``mean_hi`` (``interval`` names which),
        ``median_diff``, ``median_lo``, ``median_hi``, ``median_coverage``, ``test``, ``p_value``, ``p_holm``,
        ``detectable`` (the smallest mean difference detectable with 80% power), ``a_better_share``,
        ``image_diff``, ``image_lo``, ``image_hi`` (two-level; NaN without ``per_image``), ``warning``.

    Raises:
        ValueError: a missing column or metric, a contrast not written ``"A vs B"``, an arm with several rows per
            seed within one grid, or no contrast with both arms paired.
    """
    require_columns(results, ["policy", "seed", "arch"])
    pairs = [parse_contrast(c) for c in family]
    label = "exploratory" if exploratory else "declared"
    records = []
    for split, part in results.groupby("split", sort=True) if "split" in results else [("slice", results)]:
        readout = metric or PRIMARY[split]
        rows = metric_rows(part, readout)
        # subject mode: every repeat trains on 4 of the protocol's 5 person folds and tests on the fifth, so the
        # repeats' training sets overlap (and r, r + 5 share their people): the corrected test, with the design's
        # n_test / n_train whatever number of folds is recorded yet
        folds = N_FOLDS if split == "subject" else 0
        ratio = fold_ratio(folds) if folds else None
        setting = setting_columns(rows, ["arch"], exclude=("generator",))
        for key, group in rows.groupby(setting, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            where = {"split": split, **dict(zip(setting, key))}
            for a, b in pairs:
                values = {p: _arm(group, p, where) for p in (a, b)}
                paired = pd.concat(values, axis=1, join="inner").dropna()
                if paired.empty:  # an arm not run in this evaluation/grid, or no shared seed
                    continue
                diff = (paired[a] - paired[b]).to_numpy()
                records.append({**where, "a": a, "b": b, "family": label, "metric": readout,
                                **_describe(diff, is_lower_better(readout), seed, ratio, folds,
                                            alpha / max(len(pairs), 1)),
                                **_image_level(per_image, split, key, setting, a, b, seed)})
    table = pd.DataFrame.from_records(records)
    if table.empty:
        policies = sorted(results.policy.astype(str).unique())
        absent = sorted({p for pair in pairs for p in pair} - set(policies))
        reason = (f"policy {absent} has no rows at all" if absent
                  else "no evaluation and grid holds both arms of one with a shared seed (run both with the same "
                       "seeds)")
        raise ValueError(f"no contrast of {list(family)} has both arms in the results: {reason}; check the policy "
                         f"labels against {policies}")
    table["p_holm"] = table.groupby([c for c in table.columns if c in ("split", "arch")])["p_value"].transform(
        lambda p: holm_adjust(p.to_numpy()))
    table["warning"] = [significance_warning(n, alpha, len(pairs)) if test == WILCOXON else ""
                        for n, test in zip(table.n_pairs, table.test)]
    return table


def _arm(group: pd.DataFrame, policy: str, where: dict) -> pd.Series:
    """One arm's values by seed within one evaluation and grid; an error naming the columns that tell apart
    several rows of one seed (they would be mis-paired)."""
    rows = group[group.policy == policy]
    doubled = rows[rows.duplicated("seed", keep=False)]
    if len(doubled):
        differ = [c for c in rows.columns if c not in ("seed", "value", "policy")
                  and doubled.groupby("seed")[c].nunique(dropna=False).max() > 1]
        raise ValueError(f"policy {policy!r} has several rows per seed at {where} (they differ in "
                         f"{differ or 'no column: the same trial is in the table twice'}); give those arms distinct "
                         "policy labels or filter the table to one of them first")
    return rows.set_index("seed")["value"].astype(float)


def _describe(diff: np.ndarray, lower_is_better: bool, seed: int, ratio: float | None, folds: int,
              strictest_alpha: float) -> dict[str, float | str]:
    """The paired differences' estimates, test and detectable difference; ``ratio``: the corrected t-test's
    n_test/n_train where repeats share people (None: the signed-rank test)."""
    median_lo, median_hi, coverage = median_interval(diff)
    if ratio is not None:
        test, p = CORRECTED_T.format(k=folds), corrected_resampled_t(diff, ratio)
        interval, (low, high) = "corrected t", corrected_mean_interval(diff, ratio)
    else:
        test = WILCOXON
        p = float(sps.wilcoxon(diff).pvalue) if len(diff) > 1 and np.any(diff != 0) else float("nan")
        interval, (low, high) = "BCa", bca_mean_interval(diff, seed=seed)
    better = diff < 0 if lower_is_better else diff > 0
    return {"n_pairs": len(diff), "mean_diff": float(diff.mean()), "mean_lo": low, "mean_hi": high,
            "median_diff": float(np.median(diff)), "median_lo": median_lo, "median_hi": median_hi,
            "median_coverage": coverage, "interval": interval, "test": test, "p_value": p,
            "detectable": detectable_difference(diff, alpha=strictest_alpha, power=POWER, test_train_ratio=ratio),
            "a_better_share": float(better.mean())}


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
