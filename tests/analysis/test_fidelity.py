"""Fidelity of synthetic images: histograms, classifier labels, FD, KID, precision/recall, the report and the
strength choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_data import real_set

from mri_synth.analysis import fidelity, memorisation
from mri_synth.analysis import synthetic_figures as figures
from mri_synth.data.types import CLASS_NAMES


def test_intensity_histograms_are_densities_per_class_and_kind():
    images, labels, _ = real_set()
    table = fidelity.intensity_histograms(images, labels, images[:4], labels[:4], bins=16)
    width = 256 / 16
    sums = table.groupby(["class", "kind"]).density.sum() * width
    assert np.allclose(sums.values, 1.0) and len(sums) == 8


def test_classifier_labels_table_and_summary():
    labels = torch.tensor([0, 0, 1, 2, 3, 3])
    predicted = torch.tensor([0, 2, 1, 2, 3, 0])
    proba = torch.nn.functional.one_hot(predicted, 4).float()
    table = fidelity.classifier_labels(proba, labels)
    assert list(table.index) == list(CLASS_NAMES) and np.allclose(table.sum(1), 1)
    assert table.loc["Mild_Demented", "Non_Demented"] == 0.5
    assert table.loc["Moderate_Demented", "Moderate_Demented"] == 1
    fig = figures.plot_classifier_labels(table)
    assert len(fig.axes) == 1


SSIM_TOL = 5e-4  # SSIM runs in float32: E[x^2] - E[x]^2 of a constant image is not exactly 0


def test_frechet_distance_equals_the_gaussian_formula():
    real, syn = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [5.0]])
    # means 1 and 3, unbiased variances 2 and 8: (1 - 3)^2 + 2 + 8 - 2 sqrt(2 * 8) = 6
    assert fidelity.frechet_distance(real, syn) == pytest.approx(6.0, abs=1e-6)
    assert fidelity.frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)


def test_kernel_distance_equals_the_unbiased_mmd_by_hand():
    real, syn = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    # k(x, y) = (x y + 1)^3: within real k(0,1) = 1, within synthetic k(1,2) = 27, across 1 + 1 + 8 + 27 = 37
    mean, std = fidelity.kernel_distance(real, syn, subsets=3)
    assert mean == pytest.approx(1 + 27 - 2 * 37 / 4) and std == pytest.approx(0.0)


def test_precision_recall_of_knn_balls_by_hand():
    real = torch.tensor([[0.0], [1.0], [10.0], [11.0], [12.0]])  # every real ball has radius 1 (k=1)
    syn = torch.tensor([[0.5], [1.5], [30.0], [31.0]])  # every synthetic ball has radius 1 too
    precision, recall = fidelity.precision_recall(real, syn, k=1)
    assert precision == pytest.approx(2 / 4)  # 0.5 and 1.5 lie in real balls; 30 and 31 do not
    assert recall == pytest.approx(2 / 5)  # 0 and 1 lie in synthetic balls; 10, 11, 12 do not
    with pytest.raises(ValueError, match="needs more than 3"):
        fidelity.precision_recall(real[:2], syn, k=3)


@pytest.fixture(scope="module")
def tiny_features():
    from mri_synth.training.models import tiny_model

    model, spec = tiny_model("cnn")
    return fidelity.PenultimateFeatures(model, spec)


def test_penultimate_features_are_the_input_of_the_last_linear_layer(tiny_features):
    images, _, _ = real_set(6)
    feats = tiny_features(images)
    model, spec = tiny_features.model, tiny_features.spec
    with torch.no_grad():
        x = model.block2(model.block1(spec.prepare(images))).permute(0, 2, 3, 1).flatten(1)
        expected = model.classifier[:-1](x)
        proba = model(spec.prepare(images)).softmax(1)
    assert feats.shape == (6, tiny_features.num_features) and torch.allclose(feats, expected)
    assert torch.allclose(tiny_features.last_proba, proba)
    with pytest.raises(ValueError, match="no nn.Linear"):
        fidelity.PenultimateFeatures(torch.nn.Conv2d(1, 1, 1), spec)


def test_fidelity_report_of_real_slices_equals_its_floor(tiny_features):
    images, labels, ids = real_set(16)
    _, b = fidelity._halves(labels, seed=0)
    table = fidelity.fidelity_report(tiny_features, images, labels, images[b], labels[b], [ids[i] for i in b],
                                     images, labels, ids, k=1).set_index("metric")
    for metric in ("FD", "KID", "precision", "recall", "label fidelity"):
        assert table.loc[metric, "value"] == pytest.approx(table.loc[metric, "floor"], abs=1e-6), metric
    assert table.loc["median SSIM to source (floor: adjacent slice)", "value"] == pytest.approx(1.0, abs=SSIM_TOL)
    assert table.loc["share of copies (closer to source than its adjacent slice)", "value"] == 1.0


def test_select_strength_compares_with_the_given_adjacent_floor(tiny_features):
    images, labels, ids = real_set(16)
    vary = {0.2: images, 0.5: images // 4}  # 0.2 returns copies (SSIM 1), 0.5 darker ones (far in FD, no copy)
    kwargs = dict(min_label_fidelity=0.0, seed=0)
    chosen, table = fidelity.select_strength(vary.__getitem__, [0.2, 0.5], tiny_features, images, labels, images,
                                             labels, ids, adjacent_ssim=0.7, **kwargs)
    assert table["median adjacent SSIM"].tolist() == [0.7, 0.7]
    assert table.passes.tolist() == [False, True] and chosen == 0.5  # the copies fail the copy test
    _, own = fidelity.select_strength(vary.__getitem__, [0.2], tiny_features, images, labels, images, labels, ids,
                                      **kwargs)
    assert own["median adjacent SSIM"].iloc[0] == pytest.approx(memorisation.median_adjacent_ssim(images, labels))
    # no strength reaches the label fidelity: the lowest-FD one that is no copy (0.5), though the copies have lower FD
    chosen, table = fidelity.select_strength(vary.__getitem__, [0.2, 0.5], tiny_features, images, labels, images,
                                             labels, ids, adjacent_ssim=0.7, min_label_fidelity=1.1, seed=0)
    assert not table.passes.any() and table.FD.iloc[0] < table.FD.iloc[1] and chosen == 0.5
