"""Stratified sampling: proportional, covering every class, nested, seeded, and refusing bad fractions."""

import pytest
import torch

from mri_synth.data import sampling

THESIS_TRAIN = [724, 49, 2566, 1781]


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.8, 1.0])
def test_stratified_sample_is_proportional_and_covers_every_class(real_data, fraction):
    labels = real_data.train.labels
    idx = sampling.stratified_sample(labels, fraction, seed=3)
    counts = torch.bincount(labels[idx], minlength=4).tolist()
    for got, full in zip(counts, THESIS_TRAIN):
        assert got >= 1
        assert abs(got - fraction * full) <= 1
    assert len(set(idx.tolist())) == len(idx)


def test_stratified_sample_keeps_a_rare_class():
    labels = torch.tensor([0] * 500 + [1] * 2)
    assert torch.bincount(labels[sampling.stratified_sample(labels, 0.01, 0)]).tolist() == [5, 1]


def test_stratified_sample_is_deterministic_nested_and_seed_dependent(real_data):
    labels = real_data.train.labels
    a = sampling.stratified_sample(labels, 0.3, seed=7)
    assert torch.equal(a, sampling.stratified_sample(labels, 0.3, seed=7))
    assert not torch.equal(a, sampling.stratified_sample(labels, 0.3, seed=8))
    previous = set()
    for fraction in (0.1, 0.3, 0.4, 0.6, 0.8, 1.0):
        current = set(sampling.stratified_sample(labels, fraction, seed=7).tolist())
        assert previous <= current
        previous = current
    assert len(previous) == len(labels)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, "0.3", True])
def test_fraction_outside_range_is_refused(fraction):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sampling.stratified_sample(torch.tensor([0, 1, 2, 3]), fraction, seed=0)
