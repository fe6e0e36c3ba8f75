"""Tests of mri_synth.stats on constructed results tables whose right answers are known."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from mri_synth.analysis import stats


def _rows(arch: str, policy: str, seeds, values, metric: str = "test_loss", **spec) -> list[dict]:
    base = {"arch": arch, "policy": policy, "metric": metric, "real_fraction": 0.3, "synthetic": "none",
            "synthetic_fraction": 0.0, "synthetic_classes": "all", "augment": "none", "epochs": 3}
    return [{**base, **spec, "seed": int(s), "value": float(v), "trial_key": f"{arch}/{policy}/{s}"}
            for s, v in zip(seeds, values)]


@pytest.fixture
def paired_table():
    """B varies a lot between repeats (different real subsets); A = B + a known per-repeat difference.

    The differences have distinct magnitudes so that the exact signed-rank distribution applies (no ties).
    """
    rng = np.random.default_rng(1)
    seeds = np.arange(10)
    subset_effect = rng.uniform(0.1, 0.5, size=10)  # larger than the differences: only pairing sees them
    differences = np.array([-0.031, -0.012, -0.053, 0.022, -0.044, -0.017, 0.008, -0.065, -0.014, -0.026])
    rows = _rows("cnn", "B", seeds, subset_effect) + _rows("cnn", "A", seeds, subset_effect + differences)
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)  # order must not matter
    return table, differences


def test_paired_differences_and_share_are_exact(paired_table):
    table, differences = paired_table
    row = stats.compare_policies(table, "A", "B").iloc[0]
    assert row["n_pairs"] == 10
    assert row["median_diff"] == pytest.approx(np.median(differences))
    assert row["mean_diff"] == pytest.approx(differences.mean())
    assert row["share_a_better"] == pytest.approx(0.8)  # 8 of 10 differences are negative (lower loss)
    assert row["share_ties"] == 0.0
    assert row["median_diff_lo"] <= row["median_diff"] <= row["median_diff_hi"]
    assert row["mean_diff_lo"] <= row["mean_diff"] <= row["mean_diff_hi"]


def _exact_signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided exact p of the signed-rank test by enumerating all 2^n sign patterns (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(differences))) + 1
    observed = ranks[differences > 0].sum()
    centre = len(ranks) * (len(ranks) + 1) / 4
    totals = np.array([np.dot(signs, ranks) for signs in itertools.product((0, 1), repeat=len(ranks))])
    return float(np.mean(np.abs(totals - centre) >= abs(observed - centre) - 1e-12))


def test_wilcoxon_p_matches_independent_enumeration(paired_table):
    table, differences = paired_table
    row = stats.compare_policies(table, "A", "B").iloc[0]
    assert row["p_value"] == pytest.approx(_exact_signed_rank_p(differences), rel=1e-9)
    # The comparison is symmetric: swapping A and B keeps p and flips the differences.
    swapped = stats.compare_policies(table, "B", "A").iloc[0]
    assert swapped["p_value"] == pytest.approx(row["p_value"])
    assert swapped["median_diff"] == pytest.approx(-row["median_diff"])
    assert swapped["share_a_better"] == pytest.approx(0.2)


def test_bootstrap_interval_covers_true_median_difference():
    rng = np.random.default_rng(7)
    seeds = np.arange(60)
    base = rng.uniform(0.1, 0.5, size=60)
    true_shift = -0.05
    table = pd.DataFrame(_rows("cnn", "B", seeds, base)
                         + _rows("cnn", "A", seeds, base + true_shift + rng.normal(0, 0.01, size=60)))
    row = stats.compare_policies(table, "A", "B", n_resamples=4000).iloc[0]
    assert row["median_diff_lo"] < true_shift < row["median_diff_hi"]
    assert row["mean_diff_lo"] < true_shift < row["mean_diff_hi"]
    assert row["median_diff_hi"] < 0  # the interval excludes "no difference"
    assert row["p_value"] < 1e-6


def test_higher_is_better_metric_counts_larger_values_as_wins():
    seeds = range(4)
    table = pd.DataFrame(_rows("cnn", "A", seeds, [0.9, 0.8, 0.7, 0.6], metric="accuracy")
                         + _rows("cnn", "B", seeds, [0.8, 0.9, 0.6, 0.5], metric="accuracy"))
    row = stats.compare_policies(table, "A", "B", "accuracy").iloc[0]
    assert not row["lower_is_better"]
    assert row["share_a_better"] == pytest.approx(0.75)
    flipped = stats.compare_policies(table, "A", "B", "accuracy", lower_is_better=True).iloc[0]
    assert flipped["share_a_better"] == pytest.approx(0.25)


def test_all_ties_give_undefined_test_not_a_crash():
    table = pd.DataFrame(_rows("cnn", "A", range(5), [0.2] * 5) + _rows("cnn", "B", range(5), [0.2] * 5))
    row = stats.compare_policies(table, "A", "B").iloc[0]
    assert np.isnan(row["p_value"])
    assert row["share_ties"] == 1.0 and row["share_a_better"] == 0.0


def test_groups_are_compared_separately_per_architecture():
    table = pd.DataFrame(_rows("cnn", "A", range(3), [1, 2, 3]) + _rows("cnn", "B", range(3), [2, 3, 4])
                         + _rows("vit", "A", range(4), [5, 5, 5, 5]) + _rows("vit", "B", range(4), [4, 4, 4, 6]))
    result = stats.compare_policies(table, "A", "B").set_index("arch")
    assert result.loc["cnn", "median_diff"] == pytest.approx(-1.0)
    assert result.loc["vit", "n_pairs"] == 4
    assert result.loc["vit", "share_a_better"] == pytest.approx(0.25)


def test_summarize_matches_numpy_and_is_reproducible():
    values = np.array([0.3, 0.1, 0.2, 0.5, 0.4, 0.25])
    table = pd.DataFrame(_rows("cnn", "A", range(6), values) + _rows("cnn", "B", range(6), values + 1)
                         + _rows("cnn", "A", range(6), values * 0, metric="accuracy"))
    summary = stats.summarize(table)
    assert list(summary["policy"]) == ["A", "B"]
    a = summary.iloc[0]
    assert a["n"] == 6 and a["metric"] == "test_loss"
    assert a["median"] == pytest.approx(np.median(values))
    assert a["mean"] == pytest.approx(values.mean())
    assert a["std"] == pytest.approx(values.std(ddof=1))
    assert a["median_lo"] <= a["median"] <= a["median_hi"]
    assert values.min() <= a["median_lo"] and a["median_hi"] <= values.max()
    assert summary.iloc[1]["median"] == pytest.approx(np.median(values) + 1)
    pd.testing.assert_frame_equal(summary, stats.summarize(table))


def test_summarize_rejects_thin_settings_unless_asked():
    table = pd.DataFrame(_rows("cnn", "A", [0], [0.3]) + _rows("cnn", "B", range(3), [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="fewer than 2 repeats.*min_repeats=1"):
        stats.summarize(table)
    summary = stats.summarize(table, min_repeats=1).set_index("policy")
    assert np.isnan(summary.loc["A", "median_lo"]) and summary.loc["A", "median"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("edit", "call", "message"),
    [
        (lambda t: t.drop(columns="seed"), lambda t: stats.compare_policies(t, "A", "B"), "lacks column.*seed"),
        (lambda t: t, lambda t: stats.compare_policies(t, "A", "C"), "no rows of policy 'C'"),
        (lambda t: t, lambda t: stats.summarize(t, "auc"), "no rows with metric == 'auc'"),
        (lambda t: t.assign(seed=np.where(t["policy"] == "A", t["seed"] + 100, t["seed"])),
         lambda t: stats.compare_policies(t, "A", "B"), "no paired repeats"),
        (lambda t: t[(t["policy"] == "B") | (t["seed"] == 0)],
         lambda t: stats.compare_policies(t, "A", "B"), "only 1 paired repeat.*run more seeds"),
        (lambda t: pd.concat([t, t[t["policy"] == "A"].assign(epochs=10)]),
         lambda t: stats.compare_policies(t, "A", "B"), "several rows.*epochs"),
    ],
)
def test_bad_tables_raise_errors_that_name_the_fix(paired_table, edit, call, message):
    table, _ = paired_table
    with pytest.raises(ValueError, match=message):
        call(edit(table))


def test_direction_of_metrics():
    assert stats.is_lower_better("test_loss") and stats.is_lower_better("ece")
    assert not stats.is_lower_better("balanced_accuracy")
    assert not stats.is_lower_better("recall_Moderate_Demented")
    with pytest.raises(ValueError, match="pass lower_is_better"):
        stats.is_lower_better("auc")


def test_holm_adjustment_by_hand():
    # Sorted p 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04); NaN is left out of m.
    adjusted = stats.holm_adjust([0.01, 0.04, np.nan, 0.03])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])


def test_compare_to_reference_covers_every_other_policy(paired_table):
    table, _ = paired_table
    extra = table[table["policy"] == "A"].assign(policy="C", value=lambda t: t["value"] + 0.1)
    other_arch = table[table["policy"] == "A"].assign(arch="vit", policy="D")  # never paired with B
    result = stats.compare_to_reference(pd.concat([table, extra, other_arch]), "B")
    assert sorted(result["a"]) == ["A", "C"]
    assert (result["b"] == "B").all()
    assert (result["p_holm"] >= result["p_value"]).all()
    assert result.set_index("a").loc["C", "share_a_better"] == 0.0
    with pytest.raises(stats.UnpairedError, match="no paired repeats: 'D' and 'B'"):  # asked for by name
        stats.compare_to_reference(pd.concat([table, other_arch]), "B", policies=["A", "D"])


def test_thesis_comparison_matches_generative_arm_not_the_repeat_control():
    seeds = range(3)
    rows = (_rows("cnn", "100% real", seeds, [0.17, 0.18, 0.19], real_fraction=1.0)
            + _rows("cnn", "30% real + 70% diffusion", seeds, [0.2, 0.21, 0.22], synthetic="diffusion",
                    synthetic_fraction=0.7)
            + _rows("cnn", "30% real repeated", seeds, [0.3, 0.3, 0.3], synthetic="repeat", synthetic_fraction=0.7)
            + _rows("cnn", "30% real + AutoAugment", seeds, [0.4, 0.4, 0.4], augment="autoaugment"))
    table = stats.thesis_comparison(pd.DataFrame(rows)).set_index("thesis_setting")
    assert len(table) == 3
    assert table.loc["100% real", "median"] == pytest.approx(0.18)
    assert table.loc["100% real", "thesis_median"] == pytest.approx(0.1760, abs=5e-5)
    synthetic = table.loc["30% real + 70% DALL-E 2 synthetic"]
    assert synthetic["policy"] == "30% real + 70% diffusion"
    assert synthetic["ratio"] == pytest.approx(0.21 / 0.174202)
    # No plain 30% arm was run (only AutoAugment, which the thesis row does not match): shown empty.
    assert table.loc["30% real", "n"] == 0 and np.isnan(table.loc["30% real", "median"])


def test_method_labels_drop_the_real_fraction():
    rows = (_rows("cnn", "30% real", [0], [0.1]) + _rows("cnn", "100% real", [0], [0.1], real_fraction=1.0)
            + _rows("cnn", "30% + diff", [0], [0.1], synthetic="diffusion", synthetic_fraction=0.7)
            + _rows("cnn", "30% + diff MM", [0], [0.1], synthetic="diffusion",
                    synthetic_classes="Mild_Demented+Moderate_Demented")
            + _rows("cnn", "30% + AA", [0], [0.1], augment="autoaugment"))
    labels = list(stats.with_method(pd.DataFrame(rows))["method"])
    assert labels == ["real only", "real only", "+ diffusion",
                      "+ diffusion (Mild_Demented+Moderate_Demented)", "+ autoaugment"]


def test_two_grids_in_one_table_are_summarised_and_compared_apart():
    # the same arms run twice, at 3 and at 10 epochs, into one results folder: never one pooled median
    rows = (_rows("cnn", "B", range(4), [1.0, 1.1, 1.2, 1.3]) + _rows("cnn", "A", range(4), [0.9, 1.0, 1.1, 1.2])
            + _rows("cnn", "B", range(4), [0.5, 0.6, 0.7, 0.8], epochs=10)
            + _rows("cnn", "A", range(4), [0.3, 0.4, 0.5, 0.6], epochs=10))
    table = pd.DataFrame(rows)
    summary = stats.summarize(table, "test_loss", by=["policy"])
    got = sorted(zip(summary.policy, summary.epochs, summary["median"].round(6)))
    assert got == [("A", 3, 1.05), ("A", 10, 0.45), ("B", 3, 1.15), ("B", 10, 0.65)]
    compared = stats.compare_to_reference(table, "B", "test_loss")
    assert sorted(zip(compared.epochs, compared.median_diff)) == [(3, pytest.approx(-0.1)), (10, pytest.approx(-0.2))]
    # a single grid gets no extra column
    assert "epochs" not in stats.summarize(table[table.epochs == 3], "test_loss", by=["policy"]).columns
