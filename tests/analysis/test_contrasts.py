"""Tests of mri_synth.analysis.contrasts, the one function that compares arms, on tables whose answers are known."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from mri_synth.analysis.contrasts import against_reference, paired_contrasts, parse_contrast


def _rows(arch: str, policy: str, seeds, values, metric: str = "test_loss", **spec) -> list[dict]:
    base = {"arch": arch, "policy": policy, "metric": metric, "real_fraction": 0.3, "synthetic": "none",
            "synthetic_fraction": 0.0, "synthetic_classes": "all", "augment": "none", "epochs": 3}
    return [{**base, **spec, "seed": int(s), "value": float(v), "trial_key": f"{arch}/{policy}/{s}"}
            for s, v in zip(seeds, values)]


def _one(table: pd.DataFrame, contrast: str, metric: str = "test_loss", **options) -> pd.Series:
    result = paired_contrasts(table, [contrast], metric, **options)
    assert len(result) == 1
    return result.iloc[0]


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
    row = _one(table, "A vs B")
    assert row["split"] == "slice" and row["arch"] == "cnn"  # no split column: read as the slice evaluation
    assert row["n_pairs"] == 10 and row["family"] == "declared"
    assert row["median_diff"] == pytest.approx(np.median(differences))
    assert row["mean_diff"] == pytest.approx(differences.mean())
    assert row["a_better_share"] == pytest.approx(0.8)  # 8 of 10 differences are negative (lower loss)
    assert row["median_lo"] <= row["median_diff"] <= row["median_hi"]
    assert row["mean_lo"] <= row["mean_diff"] <= row["mean_hi"]
    assert row["p_holm"] == pytest.approx(row["p_value"])  # a family of one
    assert np.isnan(row["image_diff"])  # no per-image losses given


def _exact_signed_rank_p(differences: np.ndarray) -> float:
    """Two-sided exact p of the signed-rank test by enumerating all 2^n sign patterns (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(differences))) + 1
    observed = ranks[differences > 0].sum()
    centre = len(ranks) * (len(ranks) + 1) / 4
    totals = np.array([np.dot(signs, ranks) for signs in itertools.product((0, 1), repeat=len(ranks))])
    return float(np.mean(np.abs(totals - centre) >= abs(observed - centre) - 1e-12))


def test_wilcoxon_p_matches_independent_enumeration(paired_table):
    table, differences = paired_table
    row = _one(table, "A vs B")
    assert row["p_value"] == pytest.approx(_exact_signed_rank_p(differences), rel=1e-9)
    # The comparison is symmetric: swapping A and B keeps p and flips the differences.
    swapped = _one(table, "B vs A")
    assert swapped["p_value"] == pytest.approx(row["p_value"])
    assert swapped["median_diff"] == pytest.approx(-row["median_diff"])
    assert swapped["mean_diff"] == pytest.approx(-row["mean_diff"])
    assert swapped["a_better_share"] == pytest.approx(0.2)


def test_intervals_cover_a_known_shift():
    rng = np.random.default_rng(7)
    seeds = np.arange(60)
    base = rng.uniform(0.1, 0.5, size=60)
    true_shift = -0.05
    table = pd.DataFrame(_rows("cnn", "B", seeds, base)
                         + _rows("cnn", "A", seeds, base + true_shift + rng.normal(0, 0.01, size=60)))
    row = _one(table, "A vs B")
    assert row["n_pairs"] == 60
    assert row["median_lo"] < true_shift < row["median_hi"]
    assert row["median_coverage"] >= 0.95
    assert row["mean_lo"] < true_shift < row["mean_hi"]
    assert row["median_hi"] < 0 and row["mean_hi"] < 0  # the intervals exclude "no difference"
    assert row["p_value"] < 1e-6
    assert row["warning"] == ""  # 60 repeats can reach 0.05


def test_higher_is_better_metric_counts_larger_values_as_wins():
    seeds = range(4)
    a, b = [0.9, 0.8, 0.7, 0.6], [0.8, 0.9, 0.6, 0.5]
    table = pd.DataFrame(_rows("cnn", "A", seeds, a, metric="accuracy") + _rows("cnn", "B", seeds, b, metric="accuracy")
                         + _rows("cnn", "A", seeds, a) + _rows("cnn", "B", seeds, b))
    accuracy = _one(table, "A vs B", "accuracy")
    assert accuracy["metric"] == "accuracy"
    assert accuracy["a_better_share"] == pytest.approx(0.75)  # A is higher in 3 of 4 pairs
    # the same values read as a loss: lower wins, so A wins only the one pair where it is lower
    assert _one(table, "A vs B", "test_loss")["a_better_share"] == pytest.approx(0.25)


def test_all_ties_give_nan_p_not_a_crash():
    table = pd.DataFrame(_rows("cnn", "A", range(5), [0.2] * 5) + _rows("cnn", "B", range(5), [0.2] * 5))
    row = _one(table, "A vs B")
    assert np.isnan(row["p_value"]) and np.isnan(row["p_holm"])
    assert row["a_better_share"] == 0.0 and row["mean_diff"] == 0.0 and row["n_pairs"] == 5
    assert np.isnan(row["mean_lo"])  # BCa is undefined without variation


def test_architectures_are_compared_separately():
    table = pd.DataFrame(_rows("cnn", "A", range(3), [1, 2, 3]) + _rows("cnn", "B", range(3), [2, 3, 4])
                         + _rows("vit", "A", range(4), [5, 5, 5, 5]) + _rows("vit", "B", range(4), [4, 4, 4, 6]))
    result = paired_contrasts(table, ["A vs B"], "test_loss").set_index("arch")
    assert sorted(result.index) == ["cnn", "vit"]
    assert result.loc["cnn", "median_diff"] == pytest.approx(-1.0) and result.loc["cnn", "n_pairs"] == 3
    assert result.loc["vit", "n_pairs"] == 4
    assert result.loc["vit", "a_better_share"] == pytest.approx(0.25)


def test_two_grids_in_one_table_are_compared_apart():
    # the same arms run twice, at 3 and at 10 epochs, into one results folder: never pooled into one pair
    rows = (_rows("cnn", "B", range(4), [1.0, 1.1, 1.2, 1.3]) + _rows("cnn", "A", range(4), [0.9, 1.0, 1.1, 1.2])
            + _rows("cnn", "B", range(4), [0.5, 0.6, 0.7, 0.8], epochs=10)
            + _rows("cnn", "A", range(4), [0.3, 0.4, 0.5, 0.6], epochs=10))
    compared = paired_contrasts(pd.DataFrame(rows), ["A vs B"], "test_loss")
    assert sorted(zip(compared.epochs, compared.n_pairs)) == [(3, 4), (10, 4)]
    assert sorted(zip(compared.epochs, compared.median_diff)) == [(3, pytest.approx(-0.1)), (10, pytest.approx(-0.2))]
    # a single grid gets no extra column
    assert "epochs" not in paired_contrasts(pd.DataFrame(rows[:8]), ["A vs B"], "test_loss").columns


def test_holm_never_lowers_a_p_value_and_corrects_over_the_family(paired_table):
    table, _ = paired_table
    c = table[table.policy == "A"].assign(policy="C", value=lambda t: t.value + 0.1)
    d = table[table.policy == "A"].assign(policy="D", value=lambda t: t.value + 0.001 * t.seed)
    family = ["A vs B", "C vs B", "D vs B"]
    result = paired_contrasts(pd.concat([table, c, d]), family, "test_loss")
    assert list(result.a) == ["A", "C", "D"] and (result.p_holm >= result.p_value).all()
    smallest = result.p_value.min()
    assert result.p_holm.min() == pytest.approx(3 * smallest)  # the smallest p is multiplied by the family size
    assert result.set_index("a").loc["C", "a_better_share"] == 0.0  # C is 0.1 worse in every pair


def test_exploratory_contrasts_are_labelled_and_corrected_on_their_own(paired_table):
    table, _ = paired_table
    c = table[table.policy == "A"].assign(policy="C", value=lambda t: t.value - 0.01 * (t.seed + 1))
    table = pd.concat([table, c])
    declared = paired_contrasts(table, ["A vs B", "C vs B"], "test_loss")
    assert set(declared.family) == {"declared"}
    np.testing.assert_allclose(declared.p_holm.min(), 2 * declared.p_value.min())  # Holm over two
    exploratory = paired_contrasts(table, ["C vs A"], "test_loss", exploratory=True).iloc[0]
    assert exploratory.family == "exploratory"
    assert exploratory.p_value == pytest.approx(2 / 2**10)  # C is lower than A in all ten pairs
    assert exploratory.p_holm == pytest.approx(exploratory.p_value)  # its own family of one, not the declared's
    assert exploratory.a_better_share == 1.0


def test_against_reference_covers_every_other_policy(paired_table):
    table, _ = paired_table
    extra = table[table.policy == "A"].assign(policy="C", value=lambda t: t.value + 0.1)
    other_arch = table[table.policy == "A"].assign(arch="vit", policy="D")  # never paired with B
    full = pd.concat([table, extra, other_arch])
    family = against_reference(full, "B")
    assert family == ["A vs B", "C vs B", "D vs B"]
    assert against_reference(full, "B", ["C"]) == ["C vs B"]
    result = paired_contrasts(full, family, "test_loss", exploratory=True)
    assert sorted(result.a) == ["A", "C"] and (result.b == "B").all()  # D has no B in its architecture: skipped
    assert (result.family == "exploratory").all() and (result.p_holm >= result.p_value).all()
    with pytest.raises(ValueError, match=r"no rows of policy \['E'\].*policies are \['A', 'B', 'C', 'D'\]"):
        against_reference(full, "B", ["A", "E"])
    with pytest.raises(ValueError, match=r"no rows of policy \['Z'\]"):
        against_reference(full, "Z")
    with pytest.raises(ValueError, match="nothing to compare"):
        against_reference(table[table.policy == "B"], "B")


@pytest.mark.parametrize(
    ("edit", "family", "message"),
    [
        (lambda t: t.drop(columns="seed"), ["A vs B"], "lacks column.*seed"),
        (lambda t: t, ["A vs C"], r"policy \['C'\] has no rows at all.*\['A', 'B'\]"),
        (lambda t: t, ["A against B"], "written 'A vs B'"),
        (lambda t: t.assign(seed=np.where(t.policy == "A", t.seed + 100, t.seed)), ["A vs B"],
         "no contrast.*shared seed"),
        (lambda t: pd.concat([t, t[t.policy == "A"].assign(augment="autoaugment")]), ["A vs B"],
         r"policy 'A' has several rows per seed.*differ in \['augment'\]"),
        (lambda t: pd.concat([t, t[t.policy == "B"]]), ["A vs B"], "several rows per seed.*same trial.*twice"),
    ],
)
def test_bad_tables_raise_errors_that_name_the_fix(paired_table, edit, family, message):
    table, _ = paired_table
    with pytest.raises(ValueError, match=message):
        paired_contrasts(edit(table), family, "test_loss")


def test_missing_metric_is_named(paired_table):
    table, _ = paired_table
    with pytest.raises(ValueError, match="no rows with metric == 'auc'"):
        paired_contrasts(table, ["A vs B"], "auc")


def test_an_arm_absent_from_one_grid_is_skipped_there_only():
    rows = (_rows("cnn", "A", range(4), [1, 2, 3, 4]) + _rows("cnn", "B", range(4), [2, 3, 4, 5])
            + _rows("cnn", "A", range(4), [1, 2, 3, 4], epochs=10))  # B never ran at 10 epochs
    result = paired_contrasts(pd.DataFrame(rows), ["A vs B", "A vs C"], "test_loss")  # C never ran at all
    assert list(zip(result.epochs, result.a, result.b)) == [(3, "A", "B")]
    assert result.iloc[0].mean_diff == pytest.approx(-1.0)


def test_one_paired_repeat_warns_to_run_more():
    table = pd.DataFrame(_rows("cnn", "A", [0], [0.1]) + _rows("cnn", "B", [0, 1], [0.2, 0.3]))
    row = _one(table, "A vs B")
    assert row.n_pairs == 1 and np.isnan(row.p_value) and "run at least 6 repeats" in row.warning


def test_paired_contrasts_by_hand_with_holm_and_the_warning():
    rows = []
    for split, metric, base in [("slice", "test_loss", 1.0), ("subject", "dementia_auc_person", 0.7)]:
        for seed in range(6):
            for policy, shift in [("30% real", 0.0), ("30% real + 70% diffusion", 0.01 * (seed + 1)),
                                  ("30% real + autoaugment", -0.02)]:
                rows.append({"split": split, "arch": "cnn", "policy": policy, "seed": seed, "metric": metric,
                             "value": base + shift, "epochs": 10})
    table = paired_contrasts(pd.DataFrame(rows), ["30% real + 70% diffusion vs 30% real",
                                                  "30% real + autoaugment vs 30% real"])
    diffusion = table[(table.split == "slice") & (table.a == "30% real + 70% diffusion")].iloc[0]
    assert diffusion.metric == "test_loss" and diffusion.n_pairs == 6
    assert diffusion.mean_diff == pytest.approx(0.035) and diffusion.median_diff == pytest.approx(0.035)
    assert diffusion.a_better_share == 0.0  # a higher loss is worse
    assert diffusion.p_value == pytest.approx(2 / 64)  # all six one way: the exact test's smallest p
    assert diffusion.p_holm == pytest.approx(min(1, 2 * 2 / 64))  # two contrasts in the family
    assert "run at least" in diffusion.warning  # 6 repeats cannot reach 0.05 after Holm over 2
    subject = table[(table.split == "subject") & (table.a == "30% real + 70% diffusion")].iloc[0]
    assert subject.metric == "dementia_auc_person" and subject.a_better_share == 1.0  # a higher AUC is better
    with pytest.raises(ValueError, match="written 'A vs B'"):
        parse_contrast("diffusion against none")


def test_subject_repeats_that_share_people_use_the_corrected_test_and_its_interval(paired_table):
    table, differences = paired_table
    slice_row = _one(table.assign(split="slice", fold=0), "A vs B")
    subject = table.assign(split="subject", fold=table.seed % 5)
    row = _one(subject, "A vs B")
    assert slice_row["test"] == "exact Wilcoxon signed-rank" and slice_row["interval"] == "BCa"
    assert row["test"] == "corrected resampled t (Nadeau-Bengio, 5 person folds)" and row["interval"] == "corrected t"
    from mri_synth.analysis import intervals
    assert row["p_value"] == pytest.approx(intervals.corrected_resampled_t(differences, 0.25))
    assert (row["mean_lo"], row["mean_hi"]) == pytest.approx(intervals.corrected_mean_interval(differences, 0.25))
    assert row["warning"] == ""  # the t-test can reach the level with 10 repeats; the signed-rank warning is not its
    # the detectable difference at Holm's strictest level, with the corrected standard error
    assert row["detectable"] == pytest.approx(intervals.detectable_difference(differences, test_train_ratio=0.25))
    assert row["detectable"] > slice_row["detectable"] > 0


def test_the_corrected_test_takes_the_protocols_five_folds_before_every_fold_is_recorded(paired_table):
    from mri_synth.analysis import intervals

    table, differences = paired_table
    first_two = table[table.seed < 2].assign(split="subject", fold=lambda t: t.seed % 5)  # repeats 0, 1: folds 0, 1
    row = _one(first_two, "A vs B")
    assert row["test"] == "corrected resampled t (Nadeau-Bengio, 5 person folds)"  # each repeat tests 1/5 of people
    assert (row["mean_lo"], row["mean_hi"]) == pytest.approx(intervals.corrected_mean_interval(differences[:2], 0.25))
