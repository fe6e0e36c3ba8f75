"""Interval estimates for few repeats: what ``stats``' percentile bootstrap cannot give honestly.

- :func:`bca_mean_interval`: a BCa bootstrap interval (``scipy.stats.bootstrap``) of the mean of paired
  differences: better coverage than the percentile interval for the skewed, small samples studies have.
- :func:`median_interval`: the distribution-free order-statistic interval of a median, with the coverage it
  actually reaches (with 5 values the best is [min, max] at 93.75%: it says so instead of claiming 95%).
- :func:`two_level_interval`: a two-level bootstrap of a mean over repeats and, within each repeat, over test
  people (``subject`` mode: both the training draw and the people tested vary).
- :func:`smallest_p` and :func:`significance_warning`: the smallest two-sided p-value an exact signed-rank test
  of ``n`` pairs can reach, and a warning where that is above the stated level (5 repeats cannot reach 0.05).

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


def significance_warning(n_pairs: int, alpha: float = 0.05, family_size: int = 1) -> str:
    """A sentence when ``n_pairs`` repeats cannot reach ``alpha`` after Holm over ``family_size`` contrasts."""
    p = smallest_p(n_pairs)
    if p * family_size <= alpha:
        return ""
    needed = next(n for n in range(1, 64) if smallest_p(n) * family_size <= alpha)
    return (f"with {n_pairs} paired repeats the exact signed-rank test cannot reach p < {alpha}"
            f"{f' after Holm over {family_size} contrasts' if family_size > 1 else ''} (smallest p = {p:.3g} "
            f"x {family_size}); run at least {needed} repeats")

