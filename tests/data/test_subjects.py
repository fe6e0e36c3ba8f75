"""People recovered from the pixels: the real data's 200 x 32, synthetic chains, the not-clean report, the cache."""

import warnings

import numpy as np
import pytest
import torch

from mri_synth import paths
from mri_synth.data import subjects as S
from mri_synth.data import types
from mri_synth.data.types import MRIData, Split

REAL_PEOPLE_PER_CLASS = [28, 2, 100, 70]  # Mild, Moderate, Non, Very mild: OASIS-1's CDR 1, 2, 0 and 0.5 counts


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def same_partition(found: np.ndarray, truth: np.ndarray) -> bool:
    pairs = set(zip(found.tolist(), truth.tolist()))
    return len(pairs) == len(set(found.tolist())) == len(set(truth.tolist()))


# ----------------------------------------------------------------------------------------------- the real data


def test_real_data_is_200_people_of_32_slices_each_in_both_splits(real_data):
    found = real_data.subjects
    assert found is not None and found.clean
    assert found.n_groups == 200 and (found.sizes == 32).all()
    assert found.mixed_groups == []
    assert np.bincount(found.group_labels, minlength=4).tolist() == REAL_PEOPLE_PER_CLASS
    # Split.groups carries the same ids, and a split by slice puts every person in train and in test
    assert torch.equal(torch.cat([real_data.train.groups, real_data.test.groups]), torch.from_numpy(found.groups))
    assert set(real_data.train.groups.tolist()) == set(real_data.test.groups.tolist()) == set(range(200))
    # every person is one chain: positions 0..31 once each
    for person in (0, 57, 199):
        assert sorted(found.positions[found.groups == person].tolist()) == list(range(32))


def test_real_chain_neighbours_are_each_others_nearest(real_data):
    slices, caption = S.person_order(real_data, 0)
    assert len(slices) == 32 and "chain order" in caption and set(slices.groups.tolist()) == {0}
    features = S.pixel_features(slices.images)
    sim = features @ features.T
    # along the chain, consecutive slices are more alike than slices 5 apart
    assert sim.diagonal(1).min() > sim.diagonal(5).max()


# ----------------------------------------------------------------------------------------------- synthetic people


def test_smooth_synthetic_people_are_recovered_with_their_order(synthetic_people):
    data, person, place = synthetic_people([8] * 6, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean people: no warning
        found = S.recover_subjects(data, cache=False)
    assert found.clean and found.n_groups == 6
    assert same_partition(found.groups, person)
    for g in range(6):
        members = found.groups == g
        order = place[members][np.argsort(found.positions[members])]
        assert order.tolist() in (list(range(8)), list(range(8))[::-1])  # the chain, in one direction or the other


def test_unequal_sizes_and_mixed_classes_are_reported_not_hidden(synthetic_people):
    data, person, _ = synthetic_people([8, 8, 5, 8], labels=[0, 1, 2, 3], seed=2)
    with pytest.warns(S.SubjectsWarning, match=r"NOT clean.*"):
        found = S.recover_subjects(data, cache=False)
    assert not found.clean and sorted(found.sizes.tolist()) == [5, 8, 8, 8]
    assert "3 of 8" in found.summary() and "1 of 5" in found.summary()

    labels = data.train.labels.clone()
    labels[0] = (labels[0] + 1) % 4  # one slice of a person carries another class
    mixed = MRIData(Split(data.train.images, labels, data.train.ids), data.test, "mixed", "mixed")
    with pytest.warns(S.SubjectsWarning, match="1 mix classes"):
        found = S.recover_subjects(mixed, cache=False)
    assert found.mixed_groups == [int(found.groups[0])]


def test_blank_images_and_tiny_sources_do_not_break():
    blank = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    data = MRIData(Split(blank[:2], torch.tensor([0, 0]), ("a", "b")), Split(blank[2:], torch.tensor([0]), ("c",)),
                   "blank", "blank")
    found = S.recover_subjects(data, cache=False)
    assert len(found.groups) == 3 and (found.groups >= 0).all()
    nothing = Split(blank[:0], torch.tensor([], dtype=torch.long), ())
    single = MRIData(Split(blank[:1], torch.tensor([0]), ("a",)), nothing, "one", "one")
    assert S.recover_subjects(single, cache=False).groups.tolist() == [0]


def test_bad_settings_are_explained(synthetic_people):
    data, _, _ = synthetic_people([4, 4], seed=3)
    with pytest.raises(ValueError, match="neighbours must be a positive int"):
        S.recover_subjects(data, neighbours=0, cache=False)
    with pytest.raises(ValueError, match="pool must be a positive int dividing"):
        S.recover_subjects(data, pool=3, cache=False)
    with pytest.raises(ValueError, match=r"person must be a group id in 0\.\.1"):
        S.person_order(S.with_subjects(data, cache=False), 2)


# ----------------------------------------------------------------------------------------------- cache and Split


def test_cache_is_reused_and_a_corrupt_one_rebuilt(tmp_cache, monkeypatch, synthetic_people):
    data, person, _ = synthetic_people([6] * 4, seed=4)
    first = S.recover_subjects(data)
    files = list((tmp_cache / "subjects").glob("*.npz"))
    assert len(files) == 1 and data.fingerprint in files[0].name

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed although the cache holds the answer")

    with monkeypatch.context() as patch:
        patch.setattr(S, "_compute", no_compute)
        assert np.array_equal(S.recover_subjects(data).groups, first.groups)
    files[0].write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable.*recomputing"):
        again = S.recover_subjects(data)
    assert np.array_equal(again.groups, first.groups)
    # another set of slices under the same fingerprint does not read this cache
    fewer = MRIData(data.train.subset(range(10)), data.test, data.source, data.fingerprint)
    with pytest.warns(S.SubjectsWarning):
        assert len(S.recover_subjects(fewer).groups) == 10 + len(data.test)


def test_with_subjects_fills_groups_that_subsets_carry(synthetic_people):
    data, person, _ = synthetic_people([8] * 4, seed=5)
    filled = S.with_subjects(data, cache=False)
    assert filled.train.groups.dtype == torch.int64 and len(filled.test.groups) == len(data.test)
    assert same_partition(torch.cat([filled.train.groups, filled.test.groups]).numpy(), person)
    part = filled.train.subset([3, 0, 5])
    assert part.groups.tolist() == [filled.train.groups[i].item() for i in (3, 0, 5)]


def test_sample_people_recovered_from_pixels_are_the_people_it_was_drawn_as(sample_data):
    import pandas as pd

    stored = pd.read_csv(paths.SAMPLE_DIR / "people.csv").set_index("id")
    for split in (sample_data.train, sample_data.test):
        assert split.groups is not None and split.groups.dtype == torch.int64
    ids = list(sample_data.train.ids + sample_data.test.ids)
    assert sorted(ids) == sorted(stored.index)
    found = torch.cat([sample_data.train.groups, sample_data.test.groups]).tolist()
    # the same partition: each recovered group is exactly one stored person
    assert len(set(zip(found, stored.loc[ids, "person"]))) == len(set(found)) == stored.person.nunique() == 9
    assert sample_data.subjects.clean and (sample_data.subjects.sizes == 32).all()
    assert (sample_data.subjects.positions == stored.loc[ids, "slice"].to_numpy()).all()  # the same chain order
    # whole people, and, as in the source's split by slice, every one of them in both splits
    assert set(sample_data.train.groups.tolist()) == set(sample_data.test.groups.tolist())
    people_per_class = np.bincount(sample_data.subjects.group_labels, minlength=types.NUM_CLASSES).tolist()
    assert people_per_class == [2, 2, 3, 2]


def test_sample_people_are_the_real_datas_people(sample_data, real_data):
    import pandas as pd

    stored = pd.read_csv(paths.SAMPLE_DIR / "people.csv")
    real_ids = real_data.train.ids + real_data.test.ids
    real_groups = real_data.subjects.groups
    row = {i: k for k, i in enumerate(real_ids)}
    for file, person in zip(stored.id, stored.person):
        split, name = file.split("/")[0], file.rsplit("/", 1)[1]
        assert real_groups[row[f"{split}/{name.split('_')[1].split('.')[0]}"]] == person
