"""The dementia readouts of people never seen, by hand and against a null."""

import numpy as np
import pytest
import tiny_data

from mri_synth.training import readouts


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
    labels, groups = tiny_data.people(counts=(30, 2, 100, 70), slices=8)
    p_dementia = np.clip((labels != 2) * 0.3 + rng.uniform(0, 0.7, len(labels)), 0, 1)
    proba = np.stack([p_dementia, 0 * p_dementia, 1 - p_dementia, 0 * p_dementia], 1)
    assert readouts.dementia_readouts(proba, labels, groups)["dementia_auc_person"] > 0.9
    people = np.unique(groups)
    shuffled = dict(zip(people, rng.permutation([labels[groups == p][0] for p in people])))
    null = readouts.dementia_readouts(proba, np.array([shuffled[g] for g in groups]), groups)
    assert abs(null["dementia_auc_person"] - 0.5) < 0.12  # 202 people: the null AUC's sd is about 0.04


def test_per_person_averages_each_persons_slices():
    proba = np.array([[0.1, 0.0, 0.8, 0.1], [0.3, 0.0, 0.6, 0.1], [0.5, 0.1, 0.4, 0.0]])
    people = readouts.per_person(proba, np.array([2, 2, 0]), ["b", "b", "a"])
    assert people.index.tolist() == ["a", "b"]  # sorted by person
    assert people.loc["b", ["p0", "p1", "p2", "p3"]].tolist() == pytest.approx([0.2, 0.0, 0.7, 0.1])
    assert people.loc["a", "p0"] == pytest.approx(0.5) and people.label.tolist() == [0, 2]
    with pytest.raises(ValueError, match="a person id carries slices of several classes"):
        readouts.per_person(proba, np.array([2, 0, 0]), ["b", "b", "a"])


def test_auc_is_nan_when_the_evaluation_holds_one_kind_only():
    proba = np.array([[0.6, 0.0, 0.4, 0.0], [0.1, 0.0, 0.9, 0.0]])
    only_dementia = readouts.dementia_readouts(proba, np.array([0, 3]), ["a", "b"])
    assert np.isnan(only_dementia["dementia_auc"]) and np.isnan(only_dementia["dementia_auc_person"])
    assert only_dementia["person_accuracy"] == 0.5 and only_dementia["people"] == 2.0
    none = readouts.dementia_readouts(proba, np.array([2, 2]))
    assert np.isnan(none["dementia_auc"]) and set(none) == {"dementia_auc"}  # no people given: the slice AUC only
    assert readouts.NON_DEMENTED == 2


def test_a_perfect_ranking_has_an_auc_of_one_and_its_reverse_zero():
    proba = np.array([[0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 0.2, 0.8], [0.1, 0.0, 0.9, 0.0], [0.0, 0.0, 1.0, 0.0]])
    labels = np.array([0, 3, 2, 2])
    assert readouts.dementia_readouts(proba, labels)["dementia_auc"] == 1.0
    assert readouts.dementia_readouts(proba[::-1], labels)["dementia_auc"] == 0.0
