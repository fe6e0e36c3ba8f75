"""Fidelity checks, their figures, and notebook 02's config and helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mri_synth.data import CLASS_NAMES
from mri_synth.synth import FolderGenerator, SyntheticBank, fidelity, figures
from mri_synth.synth.base import to_png
from mri_synth.synth.generation import GenerationConfig, cost_so_far, real_sample


def real_set(n: int = 8):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 128, 128), generator=gen, dtype=torch.uint8)
    return images, torch.arange(n) % 4, [f"train/{i:05d}" for i in range(n)]


def test_nearest_real_finds_a_copy_and_keeps_the_real_baseline_honest():
    images, _, ids = real_set()
    copy = images[[2]]
    noisy = (images[[5]].int() + 3).clamp(0, 255).to(torch.uint8)
    table = fidelity.nearest_real(torch.cat([copy, noisy]), [ids[2], ids[1]], images, ids)
    syn = table[table.kind == "synthetic"].reset_index()
    assert syn.loc[0, "distance"] == pytest.approx(0, abs=1e-3) and syn.loc[0, "nearest_is_source"]
    assert syn.loc[1, "nearest_id"] == ids[5] and not syn.loc[1, "nearest_is_source"]
    assert syn.loc[1, "distance_to_source"] > 50  # random images are far apart
    real = table[table.kind == "real"]
    assert len(real) == 8 and (real.distance > 50).all()  # an image is never its own nearest neighbour


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
    assert table.loc["Mild_Demented", "Non_Demented"] == 0.5 and table.loc["Moderate_Demented", "Moderate_Demented"] == 1
    fig = figures.plot_classifier_labels(table)
    assert len(fig.axes) == 1


def test_pairs_figure_has_a_row_per_source_and_names_a_mismatch():
    images, labels, ids = real_set()
    synthetic = images.repeat_interleave(2, 0)
    sources = [s for s in ids for _ in range(2)]
    fig = figures.real_synthetic_pairs(images, labels, ids, synthetic, sources, per_class=1, variants=2)
    assert len(fig.axes) == 4 * 3  # one row per class: the real slice and two variations
    with pytest.raises(ValueError, match="ids must match their source ids"):
        figures.real_synthetic_pairs(images, labels, ids, synthetic, ["test/1"] * len(synthetic))


@pytest.mark.parametrize("bad, match", [
    (dict(generator="dalle"), "unknown generator 'dalle'"),
    (dict(real_fraction=1.5), "real_fraction"),
    (dict(diffusion_image_size=48), "power of two"),
    (dict(diffusion_preset="huge"), "diffusion preset must be one of"),
])
def test_generation_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**bad)


def test_real_sample_is_stratified_and_cost_table_counts(sample_data, tmp_path):
    config = GenerationConfig(real_fraction=0.3, bank_dir=str(tmp_path / "bank"))
    sources = real_sample(sample_data, config)
    assert all(n >= 1 for n in sources.class_counts()) and set(sources.ids) <= set(sample_data.train.ids)
    assert cost_so_far(config.bank()).empty
    folder = tmp_path / "made"
    (folder / CLASS_NAMES[int(sources.labels[0])]).mkdir(parents=True)
    name = sources.ids[0].replace("/", "%2F")
    (folder / CLASS_NAMES[int(sources.labels[0])] / f"{name}__v0.png").write_bytes(to_png(sources.images[0]))
    SyntheticBank(config.bank_dir).fill(FolderGenerator(folder), sources.images, sources.labels, sources.ids, 1,
                                       progress=False)
    table = cost_so_far(config.bank())
    assert table.loc[0, "ok"] == 1 and table.loc[0, "missing"] == len(sources) - 1 and table.loc[0, "cost_usd"] == 0
