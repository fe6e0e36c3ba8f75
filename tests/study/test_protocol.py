"""The evaluation protocol: validation carved first, person-disjoint folds, person-level fractions."""

import numpy as np
import pandas as pd
import pytest
import tiny_data

from mri_synth.study import protocol


def test_slice_partition_validates_on_training_slices_only():
    labels = np.repeat(np.arange(4), [40, 6, 100, 60])
    part = protocol.slice_partition(labels, n_test=50)
    assert len(np.intersect1d(part.pool, part.validation)) == 0 and set(part.test) == set(range(206, 256))
    assert sorted(np.concatenate([part.pool, part.validation]).tolist()) == list(range(206))
    assert np.bincount(labels[part.validation]).tolist() == [6, 1, 15, 9]  # 15% per class, at least one
    again = protocol.slice_partition(labels, n_test=50)
    assert np.array_equal(again.validation, part.validation)  # fixed: the same for every arm and seed


def test_subject_folds_are_person_disjoint_and_cover_everyone_once():
    labels, groups = tiny_data.people()
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
    labels, groups = tiny_data.people()
    small = protocol.people_sample(labels, groups, 0.3, seed=1)
    large = protocol.people_sample(labels, groups, 0.6, seed=1)
    assert set(small) <= set(large)
    chosen = set(groups[small])
    assert all(set(np.flatnonzero(groups == g)) <= set(small) for g in chosen)  # all of a person's slices
    per_class = pd.Series(sorted(chosen)).str[:2].value_counts().sort_index().tolist()
    assert per_class == [1, 1, 4, 2]  # 30% of 3, 2, 12, 8 people: at least one per class


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
