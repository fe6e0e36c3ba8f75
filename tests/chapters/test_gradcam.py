"""Tests of mri_synth.chapters.gradcam: notebook 03's config, classifier cache, sources, variations through the bank,
and the real-vs-synthetic panels."""

import numpy as np
import pandas as pd
import pytest
import torch

from mri_synth.chapters.gradcam import (
    GradCamConfig,
    choose_sources,
    plot_agreement,
    real_vs_synthetic_figure,
    real_vs_synthetic_panels,
    save_agreement,
    save_panels,
    synthetic_variations,
    trained_classifier,
)
from mri_synth.data.types import CLASS_NAMES, MRIData
from mri_synth.synth import SourceResult, SyntheticBank, fingerprint_of
from mri_synth.training.gradcam import PAIR_KINDS, CamExplainer


class MirrorGenerator:
    """A free local generator for tests: the k-th variation is the source mirrored and darkened by k grey levels."""

    name = "mirror"
    sources_per_call = 8
    variants_per_call = 4

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.name, {})

    def describe(self) -> dict:
        return {"name": self.name}

    def estimate_cost_usd(self, n_images: int) -> float:
        return 0.0

    def generate(self, images, labels, ids, n_variants, seed, *, first_variant=0):
        return [SourceResult(source_id=sid, images=torch.stack([
            (image.flip(-1).int() - v).clamp(0, 255).to(torch.uint8)
            for v in range(first_variant, first_variant + n_variants)]), model="mirror") for image, sid in
            zip(images, ids)]


@pytest.fixture()
def small_data(sample_data):
    """A few slices per class of the bundled sample: enough to train one epoch in a second."""
    train = sample_data.train.subset(choose_sources(sample_data.train, 6, seed=0))
    test = sample_data.test.subset(choose_sources(sample_data.test, 3, seed=0))
    return MRIData(train, test, sample_data.source, sample_data.fingerprint + "-small")


def test_config_checks_values_and_names():
    config = GradCamConfig(panel_classes="ModerateDemented, Non_Demented", input_size=32)
    assert config.classes == ["ModerateDemented", "Non_Demented"] and config.spec.input_size == 32
    with pytest.raises(ValueError, match="unknown model 'alexnet9'"):
        GradCamConfig(model_name="alexnet9")
    with pytest.raises(ValueError, match="unknown CAM method"):
        GradCamConfig(cam_method="lime")
    with pytest.raises(ValueError, match="unknown class folder 'Severe'"):
        GradCamConfig(explained_class="Severe")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        GradCamConfig(epochs=0)
    with pytest.raises(ValueError, match="top_fraction"):
        GradCamConfig(top_fraction=1.0)
    with pytest.raises(ValueError, match="diffusion.preset must be one of"):
        GradCamConfig(diffusion_preset="huge")


def test_choose_sources_per_class_sorted_and_seeded(sample_data):
    train = sample_data.train
    picked = choose_sources(train, 5, seed=3)
    assert torch.equal(picked, picked.sort().values)
    assert torch.bincount(train.labels[picked], minlength=4).tolist() == [5, 5, 5, 5]
    assert torch.equal(picked, choose_sources(train, 5, seed=3))
    assert not torch.equal(picked, choose_sources(train, 5, seed=4))
    only = choose_sources(train, 100, seed=0, classes=["Moderate_Demented"])
    assert len(only) == train.class_counts()[1] and (train.labels[only] == 1).all()  # capped at the class size


def test_trained_classifier_is_cached_and_reloaded(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    config = GradCamConfig(input_size=32, epochs=1, batch_size=8, device="cpu")
    model, spec, history = trained_classifier(config, small_data)
    assert spec.input_size == 32 and len(history) == 1 and not model.training
    saved = list((tmp_path / "cache" / "classifier").glob("cnn-*/weights.pt"))
    assert len(saved) == 1
    again, _, history_again = trained_classifier(config, small_data)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    pd.testing.assert_frame_equal(history.reset_index(drop=True), history_again, check_dtype=False)
    trained_classifier(GradCamConfig(input_size=32, epochs=1, batch_size=8, seed=1), small_data)
    assert len(list((tmp_path / "cache" / "classifier").glob("cnn-*/weights.pt"))) == 2  # another seed
    # a cache file that cannot be read is trained again, with a warning naming it
    saved[0].write_bytes(saved[0].read_bytes()[:100])
    with pytest.warns(UserWarning, match=f"{saved[0].parent.name}.*cannot be read.*training it again"):
        retrained, _, _ = trained_classifier(config, small_data)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), retrained.state_dict().values()))


def test_variations_from_bank_panels_and_agreement_file(small_data, tmp_path):
    generator = MirrorGenerator()
    bank = SyntheticBank(tmp_path / "bank")
    sources = choose_sources(small_data.train, 2, seed=0)
    chosen = small_data.train.subset(sources)
    config = GradCamConfig(input_size=32, bank_generator=generator.fingerprint, bank_dir=str(bank.root),
                           variations_per_source=2, figures_dir=str(tmp_path / "figures"),
                           results_dir=str(tmp_path / "results"))
    with pytest.raises(ValueError, match="bank_generator='mirror-.*fill it first.*leave bank_generator empty"):
        synthetic_variations(config, small_data, sources)
    bank.fill(generator, chosen.images, chosen.labels, chosen.ids, 2, progress=False)
    variations = synthetic_variations(config, small_data, sources)
    assert len(variations) == 2 * len(sources) and sorted(set(variations.source_ids)) == sorted(chosen.ids)
    position = {sid: i for i, sid in enumerate(small_data.train.ids)}
    first = variations.source_ids[0]
    mirrored = small_data.train.images[position[first]].flip(-1)
    assert any(torch.equal(variations.images[i], mirrored) for i, s in enumerate(variations.source_ids) if s == first)

    torch.manual_seed(0)
    from mri_synth.training.models import create_model
    model = create_model("cnn", pretrained=False, spec=config.spec)
    with CamExplainer(model, config.spec) as explainer:
        panels = real_vs_synthetic_panels(explainer, small_data.train, variations, "Moderate_Demented",
                                          ["Moderate_Demented", "Non_Demented"], per_class=2)
    assert list(panels) == [f"03_gradcam_{c}_{k}" for c in (CLASS_NAMES[1], CLASS_NAMES[2]) for k in (1, 2)]
    assert all(len(fig.axes) == 2 * 3 for fig in panels.values())  # the real slice + 2 variations, two rows
    names = save_panels(panels, config.figures)
    assert names == [f"{name}.png" for name in panels]
    assert all((config.figures / f"{name}.pdf").exists() for name in panels)

    table = pd.DataFrame({"pair_kind": ["real-synthetic"], "metric": ["correlation"], "value": [0.5]})
    path = save_agreement(table, config, small_data, variations)
    written = pd.read_csv(path)
    assert written.loc[0, "generator_fingerprint"] == generator.fingerprint
    assert written.loc[0, "data_fingerprint"] == small_data.fingerprint


def test_real_vs_synthetic_figure_shows_slices_above_their_cam_overlays():
    gen = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8, generator=gen)
    variations = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8, generator=gen)
    cam = torch.zeros(32, 32)
    cam[:8, :8] = 1.0
    fig = real_vs_synthetic_figure(image, cam, variations, torch.stack([cam, cam]), title="t")
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes[:3]] == ["real", "synthetic 1", "synthetic 2"]
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), variations[0, 0].numpy())
    overlay = fig.axes[3].images[0].get_array()  # the real slice's overlay: hot (red) in the mapped corner
    assert overlay.shape == (32, 32, 3) and overlay[:8, :8, 0].mean() > overlay[:8, :8, 2].mean()
    with pytest.raises(ValueError, match="3 columns"):
        real_vs_synthetic_figure(image, cam, variations, torch.stack([cam, cam]), captions=["a"])
    with pytest.raises(ValueError, match="2 variations but 1 CAMs"):
        real_vs_synthetic_figure(image, cam, variations, cam[None])


def test_agreement_plot_has_a_panel_per_metric_with_both_pair_kinds():
    rows = [{"pair_kind": kind, "class_name": name, "metric": metric, "value": 0.5 + 0.1 * k}
            for kind in PAIR_KINDS for name in CLASS_NAMES[1:3] for metric in ("correlation", "top20_overlap")
            for k in range(3)]
    fig = plot_agreement(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == ["correlation", "top20_overlap"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(CLASS_NAMES[1:3])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == list(PAIR_KINDS)
    with pytest.raises(ValueError, match="empty"):
        plot_agreement(pd.DataFrame(columns=["metric", "value"]))
