"""Interval estimates for few repeats, checked against values computed by hand or by brute force."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mri_synth.analysis import intervals


def test_median_interval_coverage_is_the_binomial_one():
    low, high, coverage = intervals.median_interval(np.array([5.0, 1, 4, 2, 3]))
    assert (low, high) == (1.0, 5.0) and coverage == pytest.approx(1 - 2 / 32)  # 5 values cannot reach 95%
    values = np.arange(1.0, 21.0)
    low, high, coverage = intervals.median_interval(values)
    assert (low, high) == (6.0, 15.0) and coverage == pytest.approx(1 - 2 * sps.binom.cdf(5, 20, 0.5))
    assert coverage >= 0.95 > 1 - 2 * sps.binom.cdf(6, 20, 0.5)  # the next narrower one falls short


def test_bca_interval_covers_the_mean_and_is_nan_when_undefined():
    rng = np.random.default_rng(3)
    x = rng.normal(0.2, 0.1, 30)
    low, high = intervals.bca_mean_interval(x)
    assert low < x.mean() < high and high - low < 0.12
    assert all(np.isnan(intervals.bca_mean_interval(np.array([1.0, 1.0, 1.0]))))


def test_two_level_interval_widens_with_person_variation():
    rng = np.random.default_rng(0)
    rows = []
    for r in range(10):
        for person in range(20):
            effect = rng.normal(0, 1.0)  # people differ a lot
            rows += [{"repeat": r, "person": person, "value": 0.5 + effect + rng.normal(0, 0.1)} for _ in range(4)]
    table = pd.DataFrame(rows)
    estimate, low, high = intervals.two_level_interval(table, n_resamples=500)
    assert estimate == pytest.approx(table.groupby("repeat").value.mean().mean())
    assert low < estimate < high
    # resampling people too is wider than resampling only repeats' means
    means = table.groupby("repeat").value.mean().to_numpy()
    boot = [rng.choice(means, len(means)).mean() for _ in range(500)]
    assert high - low > np.quantile(boot, 0.975) - np.quantile(boot, 0.025)


def test_significance_warning_says_how_many_repeats():
    assert intervals.smallest_p(5) == pytest.approx(0.0625)
    assert "run at least 6 repeats" in intervals.significance_warning(5)
    assert intervals.significance_warning(10) == ""
    assert "after Holm over 4 contrasts" in intervals.significance_warning(7, family_size=4)


def test_median_interval_of_no_values_is_nan_and_of_one_value_is_that_value():
    assert all(np.isnan(intervals.median_interval(np.array([]))))
    low, high, coverage = intervals.median_interval(np.array([3.0]))
    assert (low, high) == (3.0, 3.0) and coverage == pytest.approx(0.0)  # one value cannot cover the median
    low, high, coverage = intervals.median_interval(np.arange(1.0, 21.0), confidence=0.5)
    assert (low, high) == (8.0, 13.0) and coverage == pytest.approx(1 - 2 * sps.binom.cdf(7, 20, 0.5))
    assert 1 - 2 * sps.binom.cdf(8, 20, 0.5) < 0.5  # (9, 12) would fall short of 50%


def test_bca_interval_is_seeded_and_nan_for_fewer_than_three_values():
    x = np.array([0.1, 0.3, 0.2, 0.5, 0.15, 0.25])
    assert intervals.bca_mean_interval(x, seed=1) == intervals.bca_mean_interval(x, seed=1)
    assert all(np.isnan(intervals.bca_mean_interval(np.array([0.1, 0.2]))))
    narrow = intervals.bca_mean_interval(x, confidence=0.5)
    wide = intervals.bca_mean_interval(x, confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_two_level_interval_of_identical_people_is_the_repeat_bootstrap_and_needs_rows():
    table = pd.DataFrame({"repeat": [0, 0, 1, 1], "person": ["a", "b", "a", "b"], "value": [1.0, 1.0, 3.0, 3.0]})
    estimate, low, high = intervals.two_level_interval(table, n_resamples=200)
    assert estimate == 2.0 and 1.0 <= low <= high <= 3.0
    same = table.assign(value=2.0)
    assert intervals.two_level_interval(same, n_resamples=50) == (2.0, 2.0, 2.0)  # nothing varies
    # a person's images are weighted by their count: 3 images of 1.0 and 1 of 5.0 average 2.0
    uneven = pd.DataFrame({"repeat": 0, "person": ["a", "a", "a", "b"], "value": [1.0, 1.0, 1.0, 5.0]})
    assert intervals.two_level_interval(uneven, n_resamples=10)[0] == 2.0
    with pytest.raises(ValueError, match=r"no rows to resample: pass one row per \(repeat, test image\)"):
        intervals.two_level_interval(table.iloc[:0])


def test_smallest_p_and_the_repeats_a_family_needs():
    assert intervals.smallest_p(0) == 1.0 and intervals.smallest_p(1) == 1.0 and intervals.smallest_p(6) == 2 / 64
    assert intervals.significance_warning(6) == ""  # 2 / 64 = 0.031 < 0.05
    warning = intervals.significance_warning(6, family_size=3)  # 3 x 0.031 > 0.05: 7 repeats reach 3 x 0.0156
    assert warning == ("with 6 paired repeats the exact signed-rank test cannot reach p < 0.05 after Holm over 3 "
                       "contrasts (smallest p = 0.0312 x 3); run at least 7 repeats")
    assert "run at least 8 repeats" in intervals.significance_warning(6, alpha=0.01)
    assert intervals.significance_warning(1).startswith("with 1 paired repeat the exact")  # one, not "repeats"


def test_corrected_resampled_t_by_hand_and_wider_than_the_plain_t():
    diff = np.array([0.02, -0.01, 0.03, 0.01, 0.04, -0.02, 0.05, 0.00, 0.02, 0.03])
    ratio = intervals.fold_ratio(5)
    assert ratio == 0.25
    se = diff.std(ddof=1) * np.sqrt(1 / 10 + 0.25)  # Nadeau and Bengio's variance, by hand
    t = diff.mean() / se
    assert intervals.corrected_resampled_t(diff, ratio) == pytest.approx(2 * sps.t.sf(abs(t), 9))
    plain = sps.ttest_1samp(diff, 0).pvalue
    assert intervals.corrected_resampled_t(diff, ratio) > plain  # shared people: less evidence than 10 free pairs
    assert intervals.corrected_resampled_t(diff, 0.0) == pytest.approx(plain)  # no sharing: the paired t-test
    low, high = intervals.corrected_mean_interval(diff, ratio)
    half = sps.t.ppf(0.975, 9) * se
    assert (low, high) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert np.isnan(intervals.corrected_resampled_t(np.ones(5), ratio))
    with pytest.raises(ValueError, match="at least 2 folds"):
        intervals.fold_ratio(1)


def test_detectable_difference_is_the_power_formula_and_shrinks_with_repeats():
    rng = np.random.default_rng(0)
    diff = rng.normal(0.0, 0.05, size=10)
    expected = (sps.t.ppf(0.975, 9) + sps.t.ppf(0.8, 9)) * diff.std(ddof=1) / np.sqrt(10)
    assert intervals.detectable_difference(diff) == pytest.approx(expected)
    stricter = intervals.detectable_difference(diff, alpha=0.05 / 3)
    shared = intervals.detectable_difference(diff, test_train_ratio=0.25)
    assert stricter > expected and shared > expected
    more = np.concatenate([diff] * 4)  # the same spread over 40 repeats
    assert intervals.detectable_difference(more) < expected / 1.8
    # simulated: a true shift of the detectable size is found about 80% of the time by the t-test
    size, n = expected, 10
    hits = [sps.ttest_1samp(rng.normal(size, diff.std(ddof=1), n), 0).pvalue < 0.05 for _ in range(2000)]
    assert 0.72 < np.mean(hits) < 0.88
    assert np.isnan(intervals.detectable_difference(diff[:2]))
