"""The evaluation protocol: validation carved first, person-disjoint folds, person-level fractions; readouts and
intervals for few repeats, each checked against values computed by hand or by brute force."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mri_synth.analysis import intervals
from mri_synth.study import protocol
from mri_synth.training import readouts


def _people(counts=(3, 2, 12, 8), slices=4):
    """Person ids and labels: ``counts[c]`` people of class c, ``slices`` slices each."""
    labels, groups = [], []
    for c, n in enumerate(counts):
        for p in range(n):
            labels += [c] * slices
            groups += [f"c{c}p{p}"] * slices
    return np.array(labels), np.array(groups)


def test_slice_partition_validates_on_training_slices_only():
    labels = np.repeat(np.arange(4), [40, 6, 100, 60])
    part = protocol.slice_partition(labels, n_test=50)
    assert len(np.intersect1d(part.pool, part.validation)) == 0 and set(part.test) == set(range(206, 256))
    assert sorted(np.concatenate([part.pool, part.validation]).tolist()) == list(range(206))
    assert np.bincount(labels[part.validation]).tolist() == [6, 1, 15, 9]  # 15% per class, at least one
    again = protocol.slice_partition(labels, n_test=50)
    assert np.array_equal(again.validation, part.validation)  # fixed: the same for every arm and seed


def test_subject_folds_are_person_disjoint_and_cover_everyone_once():
    labels, groups = _people()
    tested = []
    for fold in range(5):
        part = protocol.subject_partition(labels, groups, fold)
        sets = [set(groups[part.pool]), set(groups[part.validation]), set(groups[part.test])]
        assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:])  # no person in two sets
        assert not any(g.startswith("c1") for g in sets[1])  # Moderate is never in validation
        assert len(part.pool) + len(part.validation) + len(part.test) == len(labels)
        tested += sorted(sets[2])
    assert sorted(tested) == sorted(set(groups))  # every person is tested exactly once over the folds
    with pytest.raises(ValueError, match="several classes"):
        protocol.subject_partition(labels, np.where(groups == "c0p0", "c2p0", groups), 0)


def test_people_sample_draws_whole_people_nested_across_fractions():
    labels, groups = _people()
    small = protocol.people_sample(labels, groups, 0.3, seed=1)
    large = protocol.people_sample(labels, groups, 0.6, seed=1)
    assert set(small) <= set(large)
    chosen = set(groups[small])
    assert all(set(np.flatnonzero(groups == g)) <= set(small) for g in chosen)  # all of a person's slices
    per_class = pd.Series(sorted(chosen)).str[:2].value_counts().sort_index().tolist()
    assert per_class == [1, 1, 4, 2]  # 30% of 3, 2, 12, 8 people: at least one per class


def test_dementia_readouts_by_hand():
    # 4 slices of 2 people: person a (Non) and person b (Mild)
    proba = np.array([[0.1, 0.0, 0.8, 0.1], [0.3, 0.0, 0.6, 0.1], [0.5, 0.0, 0.4, 0.1], [0.2, 0.0, 0.7, 0.1]])
    labels = np.array([2, 2, 0, 0])
    out = readouts.dementia_readouts(proba, labels, ["a", "a", "b", "b"])
    # P(dementia) = 0.2, 0.4 (Non) and 0.6, 0.3 (Mild): 3 of 4 (Mild, Non) pairs ranked right
    assert out["dementia_auc"] == pytest.approx(0.75)
    assert out["dementia_auc_person"] == pytest.approx(1.0)  # means 0.3 vs 0.45
    assert out["person_accuracy"] == pytest.approx(0.5) and out["people"] == 2  # b's mean says Non
    assert np.isnan(readouts.dementia_readouts(proba[:2], labels[:2])["dementia_auc"])


def test_shuffled_person_labels_give_a_dementia_auc_near_one_half():
    # a null check: probabilities that do carry signal, scored against person labels shuffled across people
    rng = np.random.default_rng(0)
    labels, groups = _people(counts=(30, 2, 100, 70), slices=8)
    p_dementia = np.clip((labels != 2) * 0.3 + rng.uniform(0, 0.7, len(labels)), 0, 1)
    proba = np.stack([p_dementia, 0 * p_dementia, 1 - p_dementia, 0 * p_dementia], 1)
    assert readouts.dementia_readouts(proba, labels, groups)["dementia_auc_person"] > 0.9
    people = np.unique(groups)
    shuffled = dict(zip(people, rng.permutation([labels[groups == p][0] for p in people])))
    null = readouts.dementia_readouts(proba, np.array([shuffled[g] for g in groups]), groups)
    assert abs(null["dementia_auc_person"] - 0.5) < 0.12  # 202 people: the null AUC's sd is about 0.04


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


def test_subject_mode_on_the_real_data_keeps_people_apart_for_every_fold_seed_and_fraction(real_data):
    import torch

    seen_test = set()
    for fold in range(protocol.N_FOLDS):
        ev = protocol.evaluation(real_data, "subject", fold)
        pool, val, test = (set(s.groups.tolist()) for s in (ev.pool, ev.validation, ev.test))
        assert not (pool & val) and not (pool & test) and not (val & test)
        assert 1 not in set(ev.validation.labels.tolist())  # no Moderate person validates
        assert len(pool | val | test) == 200 and not (seen_test & test)
        seen_test |= test
        for seed in range(3):
            previous = set()
            for fraction in (0.1, 0.3, 0.6, 1.0):
                subset = ev.real_subset(fraction, seed)
                people = set(subset.groups.tolist())
                assert people <= pool and previous <= people  # drawn from the pool only, nested across fractions
                # whole people: every slice of a chosen person comes along
                assert len(subset) == int(torch.isin(ev.pool.groups, torch.tensor(sorted(people))).sum())
                previous = people
    assert len(seen_test) == 200  # every person is tested in exactly one fold
    slice_ev = protocol.evaluation(real_data, "slice")
    assert len(slice_ev.test) == 1280 and len(slice_ev.pool) + len(slice_ev.validation) == 5120
