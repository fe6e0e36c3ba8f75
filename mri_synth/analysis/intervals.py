"""Interval estimates for few repeats: what ``stats``' percentile bootstrap cannot give honestly.

- :func:`bca_mean_interval`: a BCa bootstrap interval (``scipy.stats.bootstrap``) of the mean of paired
  differences: better coverage than the percentile interval for the skewed, small samples studies have.
- :func:`median_interval`: the distribution-free order-statistic interval of a median, with the coverage it
  actually reaches (with 5 values the best is [min, max] at 93.75%: it says so instead of claiming 95%).
- :func:`two_level_interval`: a two-level bootstrap of a mean over repeats and, within each repeat, over test
  people (``subject`` mode: both the training draw and the people tested vary).
- :func:`smallest_p` and :func:`significance_warning`: the smallest two-sided p-value an exact signed-rank test
  of ``n`` pairs can reach, and a warning where that is above the stated level (5 repeats cannot reach 0.05).
- :func:`corrected_resampled_t`: the paired test where repeats share test people (``subject`` mode: 5 person
  folds x 2 seeds), Nadeau and Bengio's corrected resampled t-test as Bouckaert and Frank apply it to repeated
  k-fold cross-validation.
- :func:`detectable_difference`: the smallest mean difference a paired comparison of this spread could detect.

Holm's adjustment over a family declared before the run is ``stats.holm_adjust``; the tables come from ``study``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps


def bca_mean_interval(values: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 4000,
                      seed: int = 0) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values`` (NaN for fewer than 3 values or no variation)."""
    values = np.asarray(values, dtype=float)
    if values.size < 3 or np.ptp(values) == 0:
        return float("nan"), float("nan")
    result = sps.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                           method="BCa", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def median_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(low, high, coverage)``: the narrowest symmetric order-statistic interval of the median reaching
    ``confidence`` under any continuous distribution, or [min, max] with the (smaller) coverage it reaches."""
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    # P(x_(k) <= median <= x_(n+1-k)) = 1 - 2 * P(Binomial(n, 1/2) <= k - 1)
    best = (x[0], x[-1], 1 - 2 * sps.binom.cdf(0, n, 0.5))
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * sps.binom.cdf(k - 1, n, 0.5)
        if coverage < confidence:
            break
        best = (x[k - 1], x[n - k], coverage)
    return float(best[0]), float(best[1]), float(best[2])


def two_level_interval(table: pd.DataFrame, *, value: str = "value", repeat: str = "repeat", person: str = "person",
                       statistic: Callable[[np.ndarray], float] = np.mean, confidence: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of ``statistic`` of per-repeat means, resampling repeats, then people in each.

    ``table`` holds one row per (repeat, test image) with that image's ``value`` (a loss, or a paired difference
    of losses between two arms) and its ``person``. A person's images are resampled together; each repeat's mean
    is over its resampled people's images; the statistic is taken over the resampled repeats.
    """
    rng = np.random.default_rng(seed)
    repeats = []
    for _, rows in table.groupby(repeat, sort=True):
        per_person = rows.groupby(person)[value].agg(["sum", "count"]).to_numpy()
        repeats.append(per_person)
    if not repeats:
        raise ValueError("no rows to resample: pass one row per (repeat, test image)")
    estimate = float(statistic(np.array([r[:, 0].sum() / r[:, 1].sum() for r in repeats])))
    draws = np.empty(n_resamples)
    for b in range(n_resamples):
        chosen = rng.integers(len(repeats), size=len(repeats))
        means = []
        for i in chosen:
            people = repeats[i][rng.integers(len(repeats[i]), size=len(repeats[i]))]
            means.append(people[:, 0].sum() / people[:, 1].sum())
        draws[b] = statistic(np.array(means))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def smallest_p(n_pairs: int) -> float:
    """The smallest two-sided p-value of an exact Wilcoxon signed-rank test of ``n_pairs`` pairs (all one sign)."""
    return min(1.0, 2.0 / 2**n_pairs) if n_pairs > 0 else 1.0


def paired_repeats(n_pairs: int) -> str:
    """``"1 paired repeat"``, ``"10 paired repeats"``: the count as the findings sentences write it."""
    return f"{n_pairs} paired repeat{'' if n_pairs == 1 else 's'}"


def significance_warning(n_pairs: int, alpha: float = 0.05, family_size: int = 1) -> str:
    """A sentence when ``n_pairs`` repeats cannot reach ``alpha`` after Holm over ``family_size`` contrasts."""
    p = smallest_p(n_pairs)
    if p * family_size <= alpha:
        return ""
    needed = next(n for n in range(1, 64) if smallest_p(n) * family_size <= alpha)
    return (f"with {paired_repeats(n_pairs)} the exact signed-rank test cannot reach p < {alpha}"
            f"{f' after Holm over {family_size} contrasts' if family_size > 1 else ''} (smallest p = {p:.3g} "
            f"x {family_size}); run at least {needed} repeats")



def fold_ratio(n_folds: int) -> float:
    """Test share over training share of ``n_folds``-fold cross-validation, ``1 / (k - 1)``: the correction's
    ``n_test / n_train`` (Bouckaert and Frank 2004, repeated k-fold)."""
    if n_folds < 2:
        raise ValueError(f"a fold correction needs at least 2 folds, got {n_folds}")
    return 1.0 / (n_folds - 1)


def _standard_error(diff: np.ndarray, test_train_ratio: float | None) -> float:
    """The paired mean's standard error: ``sd / sqrt(n)``, or Nadeau and Bengio's ``sd * sqrt(1/n + ratio)`` when
    the pairs share test people (``test_train_ratio`` given)."""
    n = diff.size
    inflation = 1.0 / n + (test_train_ratio or 0.0)
    return float(np.std(diff, ddof=1) * np.sqrt(inflation))


def corrected_resampled_t(diff: np.ndarray, test_train_ratio: float) -> float:
    """Two-sided p-value of Nadeau and Bengio's (2003) corrected resampled t-test of paired differences.

    Repeats that reuse test (and training) people are not independent; the plain t-test's variance ``s^2 / n``
    is then too small. The correction uses ``s^2 (1/n + n_test/n_train)`` with ``n - 1`` degrees of freedom; for
    ``r`` repetitions of ``k``-fold cross-validation (the ``subject`` evaluation: 5 person folds x 2 seeds)
    ``n_test/n_train = 1 / (k - 1)`` (:func:`fold_ratio`; Bouckaert and Frank 2004). NaN for fewer than 2 pairs
    or no variation.
    """
    diff = np.asarray(diff, dtype=float)
    if diff.size < 2 or np.ptp(diff) == 0:
        return float("nan")
    t = diff.mean() / _standard_error(diff, test_train_ratio)
    return float(2 * sps.t.sf(abs(t), df=diff.size - 1))


def corrected_mean_interval(diff: np.ndarray, test_train_ratio: float, confidence: float = 0.95
                            ) -> tuple[float, float]:
    """The t interval of the mean of paired differences with :func:`corrected_resampled_t`'s standard error: the
    interval that goes with that test (a bootstrap over repeats that share people is too narrow)."""
    diff = np.asarray(diff, dtype=float)
    if diff.size < 2 or np.ptp(diff) == 0:
        return float("nan"), float("nan")
    half = sps.t.ppf(0.5 + confidence / 2, diff.size - 1) * _standard_error(diff, test_train_ratio)
    return float(diff.mean() - half), float(diff.mean() + half)


def detectable_difference(diff: np.ndarray, *, alpha: float = 0.05, power: float = 0.8,
                          test_train_ratio: float | None = None) -> float:
    """The smallest true mean difference a two-sided paired t-test at ``alpha`` detects with ``power``, given the
    spread of ``diff``: ``(t_{1-alpha/2} + t_{power}) x SE`` with ``n - 1`` degrees of freedom, the standard error
    corrected for shared test people when ``test_train_ratio`` is given (:func:`corrected_resampled_t`).

    It reads "no difference detected": a true difference this large would have been found 80% of the time, a
    smaller one may have been missed. Pass the family's strictest level (Holm's first step: ``alpha / m``).
    NaN for fewer than 3 pairs.
    """
    diff = np.asarray(diff, dtype=float)
    if diff.size < 3:
        return float("nan")
    df = diff.size - 1
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * _standard_error(diff, test_train_ratio))
