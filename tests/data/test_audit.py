"""The leakage audit: on the real data a pixel lookup finds the test split in train; split by person it cannot."""

import numpy as np
import pytest
import torch

from mri_synth.data import audit as A
from mri_synth.data.cache import load_data
from mri_synth.data.subjects import with_subjects
from mri_synth.data.types import MRIData, Split


def test_real_data_audit_every_person_in_both_splits_and_1nn_near_perfect(real_data):
    torch.set_num_threads(1)
    result = A.leakage_audit(real_data, fractions=(1.0, 0.3))
    people = result.people
    assert people.loc["all", "people"] == people.loc["all", "in_both_splits"] == 200
    assert people["people"].drop("all").tolist() == [28, 2, 100, 70]
    assert (people["slices_per_person"] == "32").all()
    full, part = result.one_nn.itertuples()
    assert (full.train_slices, part.train_slices) == (5120, 1536)
    # a lookup that reads no anatomy: 99.5% on the real data, recalling the same person's neighbouring slice
    assert 0.99 <= full.accuracy <= 1.0 and full.same_person > 0.98
    assert 0.8 < part.accuracy < full.accuracy
    median = result.nearest[["same_class", "other_class"]].median()
    assert median["same_class"] > 0.98 and median["other_class"] < 0.95
    assert len(result.nearest) == 1280 and result.nearest["nearest_is_same_person"].mean() == full.same_person
    print(result.summary())


def test_person_disjoint_split_leaves_no_person_in_both(synthetic_people):
    data, person, _ = synthetic_people([8] * 8, labels=[0, 1, 2, 3] * 2, seed=6)
    leaky = A.leakage_audit(with_subjects(data, cache=False))
    assert leaky.people.loc["all", "in_both_splits"] == 8 and leaky.one_nn.accuracy[0] == 1.0
    assert leaky.nearest["nearest_is_same_person"].all()
    # hold out people 4..7 whole: none is in both splits, and the nearest train slice is never the same person
    images = torch.cat([data.train.images, data.test.images])
    labels = torch.cat([data.train.labels, data.test.labels])
    ids = data.train.ids + data.test.ids

    def part(index):
        return Split(images[index], labels[index], tuple(ids[i] for i in index))

    held_out = MRIData(part(np.flatnonzero(person < 4)), part(np.flatnonzero(person >= 4)), "disjoint", "disjoint")
    fair = A.leakage_audit(with_subjects(held_out, cache=False))
    assert fair.people.loc["all", "in_both_splits"] == 0
    assert fair.people.loc["all", "in_train"] == fair.people.loc["all", "in_test"] == 4
    assert not fair.nearest["nearest_is_same_person"].any() and fair.one_nn.same_person[0] == 0


def test_sample_audit_and_bad_input():
    sample = load_data("sample")
    result = A.leakage_audit(sample)
    assert result.people.loc["all", "in_both_splits"] == 9
    assert "1-NN pixel accuracy" in result.summary()
    with pytest.raises(ValueError, match="each of fractions must be a number in"):
        A.leakage_audit(sample, fractions=(0.0,))
    empty = MRIData(sample.train, sample.test.subset([]), "empty", "empty")
    with pytest.raises(ValueError, match="empty train or test split"):
        A.leakage_audit(empty)
