"""The dataset's types: a split's checks and subsets, class names in any spelling, fractions."""

import numpy as np
import pytest
import torch

from mri_synth.data import types


def test_split_groups_travel_with_subsets_and_are_checked():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    split = types.Split(images, torch.tensor([0, 1, 2, 3]), ("a", "b", "c", "d"), torch.tensor([7, 7, 9, 9]))
    assert split.subset([2, 0]).groups.tolist() == [9, 7]
    assert types.Split(images, torch.zeros(4, dtype=torch.long), tuple("abcd")).subset([1]).groups is None
    with pytest.raises(ValueError, match=r"groups must be int64 \[N\] with N = 4"):
        types.Split(images, torch.zeros(4, dtype=torch.long), tuple("abcd"), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="one person id per image"):
        types.Split(images, torch.zeros(4, dtype=torch.long), tuple("abcd"), torch.tensor([1.0, 2.0, 3.0, 4.0]))


def _split(n: int = 6, size: int = 8) -> types.Split:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()
    return types.Split(images, torch.tensor([c % 4 for c in range(n)]), tuple(f"img{i}" for i in range(n)))


def test_the_fixed_facts_of_the_dataset():
    assert types.CLASS_NAMES == ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
    assert types.NUM_CLASSES == 4 and types.IMAGE_SIZE == 128
    assert issubclass(types.DataSourceError, ValueError)  # callers that catch ValueError see it too


@pytest.mark.parametrize("images, message", [
    (torch.zeros(3, 1, 8, 8), r"images must be uint8 \[N,1,H,W\], got torch.float32 \(3, 1, 8, 8\)"),
    (torch.zeros(3, 3, 8, 8, dtype=torch.uint8), r"got torch.uint8 \(3, 3, 8, 8\)"),  # RGB: one channel only
    (torch.zeros(3, 8, 8, dtype=torch.uint8), r"got torch.uint8 \(3, 8, 8\)"),  # no channel axis
])
def test_split_refuses_images_of_another_layout(images, message):
    with pytest.raises(ValueError, match=message):
        types.Split(images, torch.zeros(3, dtype=torch.long), ("a", "b", "c"))


def test_split_refuses_lengths_that_differ():
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="images, labels and ids differ in length: 3, 2, 3"):
        types.Split(images, torch.zeros(2, dtype=torch.long), ("a", "b", "c"))
    with pytest.raises(ValueError, match="differ in length: 3, 3, 4"):
        types.Split(images, torch.zeros(3, dtype=torch.long), ("a", "b", "c", "d"))


def test_subset_keeps_the_given_order_and_repeats():
    split = _split()
    part = split.subset(torch.tensor([4, 1, 4]))
    assert len(part) == 3 and part.ids == ("img4", "img1", "img4")
    assert part.labels.tolist() == [0, 1, 0] and part.images[:, 0, 0, 0].tolist() == [4, 1, 4]
    assert part.images.dtype == torch.uint8 and part.images.shape == (3, 1, 8, 8)
    assert split.subset([]).ids == () and len(split.subset([])) == 0  # an empty subset is a valid split
    assert len(split) == 6  # the original is untouched


def test_class_counts_list_every_class_in_id_order_with_zeros():
    split = types.Split(torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.tensor([2, 2, 0, 2, 0]), tuple("abcde"))
    assert split.class_counts() == [2, 0, 3, 0]
    assert split.subset([]).class_counts() == [0, 0, 0, 0]


@pytest.mark.parametrize("name, class_id", [
    ("Mild_Demented", 0), ("MildDemented", 0), ("mild demented", 0), ("Mild-Demented", 0),
    ("Moderate_Demented", 1), ("ModerateDemented", 1), ("Non_Demented", 2), ("NonDemented", 2),
    ("Non Demented", 2), ("NON_DEMENTED", 2), ("Very_Mild_Demented", 3), ("VeryMildDemented", 3),
    ("Very Mild Demented", 3), ("very_mild_demented", 3),
])
def test_class_id_accepts_every_spelling_variant(name, class_id):
    assert types.class_id(name) == class_id and types.is_class_folder(name)


@pytest.mark.parametrize("name", ["Severe_Demented", "Demented", "Mild", "", "train"])
def test_an_unknown_class_folder_is_named_with_the_expected_ones(name):
    assert not types.is_class_folder(name)
    with pytest.raises(types.DataSourceError, match=f"unknown class folder {name!r}: expected one of Mild_Demented, "
                                                    "Moderate_Demented, Non_Demented, Very_Mild_Demented"):
        types.class_id(name)


@pytest.mark.parametrize("fraction", [1, 1.0, 0.3, 1e-6])
def test_check_fraction_accepts_shares_in_zero_one(fraction):
    value = types.check_fraction(fraction)
    assert value == fraction and isinstance(value, float)


@pytest.mark.parametrize("fraction", [0, 0.0, -0.2, 1.01, 30, "0.3", None, True, float("nan")])
def test_check_fraction_refuses_the_rest_naming_the_setting(fraction):
    with pytest.raises(ValueError, match=rf"real_fraction must be a number in \(0, 1\], got {fraction!r}: e.g. 0.3"):
        types.check_fraction(fraction, "real_fraction")


def test_subjects_summary_of_two_clean_people_and_of_a_mixed_group():
    clean = types.Subjects(groups=np.array([0, 0, 1, 1, 0, 1]), positions=np.array([0, 1, 0, 1, 2, 2]),
                           labels=np.array([2, 2, 0, 0, 2, 0]), n_train=4)
    assert clean.n_groups == 2 and clean.sizes.tolist() == [3, 3] and clean.group_labels.tolist() == [2, 0]
    assert clean.clean and clean.mixed_groups == []
    assert clean.train_groups.tolist() == [0, 0, 1, 1] and clean.test_groups.tolist() == [0, 1]
    assert clean.summary() == ("2 groups of 6 slices (sizes: 2 of 3); people per class: Mild_Demented 1, "
                               "Moderate_Demented 0, Non_Demented 1, Very_Mild_Demented 0; 2 ordered as chains; "
                               "0 mix classes")
    mixed = types.Subjects(groups=np.array([0, 0, 0, 1]), positions=np.array([-1, -1, -1, 0]),
                           labels=np.array([1, 1, 3, 3]), n_train=4)
    assert mixed.group_labels.tolist() == [1, 3] and mixed.mixed_groups == [0] and not mixed.clean
    assert mixed.summary().endswith("1 ordered as chains; 1 mix classes -- NOT clean people: treat the groups with "
                                    "care")
    assert types.Subjects(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([], dtype=np.int64),
                          0).n_groups == 0
