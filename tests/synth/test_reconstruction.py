"""The reconstruction diagnostic: a latent generator's autoencoder as a generator (issue 23's blur-or-content arms)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mri_synth.synth import SyntheticBank, registry
from mri_synth.synth.latent import LatentDiffusionConfig, LatentDiffusionGenerator
from mri_synth.synth.reconstruction import ReconstructionGenerator
from mri_synth.synth.registry import GeneratorSettings

TINY = LatentDiffusionConfig.toy(ae_steps=4, train_steps=2)


@pytest.fixture(scope="module")
def latent(sample_data):
    split = sample_data.train.subset(range(16))
    return split, LatentDiffusionGenerator(TINY, device="cpu", cpu_threads=1).train(
        split.images, split.labels, split.ids, seed=0, progress=False)


def test_each_variant_is_the_sources_reconstruction(latent):
    split, model = latent
    generator = ReconstructionGenerator(model)
    results = generator.generate(split.images[:3], split.labels[:3], split.ids[:3], 2, seed=5)
    expected = model.reconstruct(split.images[:3])
    assert [r.source_id for r in results] == list(split.ids[:3])
    for i, r in enumerate(results):
        assert r.images.shape == (2, 1, 128, 128) and r.images.dtype == torch.uint8
        assert torch.equal(r.images[0], expected[i]) and torch.equal(r.images[1], expected[i])
    assert not torch.equal(expected, split.images[:3])  # blurred, not copied


def test_the_fingerprint_follows_the_weights_not_the_sampler(latent):
    split, model = latent
    generator = ReconstructionGenerator(model)
    assert generator.fingerprint.startswith("reconstruction-") and generator.fingerprint != model.fingerprint
    resampled = LatentDiffusionGenerator(replace(TINY, ddim_steps=3, strength=0.3), device="cpu")
    resampled.autoencoder, resampled.unet = model.autoencoder, model.unet
    resampled.train_key, resampled.train_seed, resampled.n_train = model.train_key, model.train_seed, model.n_train
    assert ReconstructionGenerator(resampled).fingerprint == generator.fingerprint  # one bank for both samplers
    retrained = replace(TINY, ae_steps=5)
    other = LatentDiffusionGenerator(retrained, device="cpu")
    other.autoencoder, other.unet = model.autoencoder, model.unet
    other.train_key, other.train_seed, other.n_train = model.train_key, model.train_seed, model.n_train
    assert ReconstructionGenerator(other).fingerprint != generator.fingerprint


def test_the_bank_stores_reconstructions_like_any_variation(latent, tmp_path):
    split, model = latent
    generator = ReconstructionGenerator(model)
    images, labels, _, sources = registry.fill_and_sample(generator, SyntheticBank(tmp_path), split.subset(range(4)),
                                                          6, seed=0)
    assert len(images) == 6 and set(sources) <= set(split.ids[:4])
    recon = dict(zip(split.ids[:4], model.reconstruct(split.images[:4])))
    assert all(torch.equal(img, recon[s]) for img, s in zip(images, sources))


def test_the_two_arms_are_registered_diagnostics_that_need_a_latent_preset(latent):
    own, other = registry.get("reconstruct_own"), registry.get("reconstruct_other")
    assert (own.draws_from, other.draws_from) == ("subset", "rest")
    assert own.kind == other.kind == "diagnostic: the subset's autoencoder"
    assert own.learns_from_subset and other.learns_from_subset
    split, _ = latent
    with pytest.raises(ValueError, match="latent-\\* preset"):
        registry.build("reconstruct_own", GeneratorSettings(diffusion_preset="toy"), split, seed=0)
    with pytest.raises(ValueError, match="draws_from must be one of"):
        registry.GeneratorEntry("x", own.label, own.build, draws_from="test")


def test_a_generator_without_an_autoencoder_is_refused():
    with pytest.raises(ValueError, match="latent-\\* diffusion preset"):
        ReconstructionGenerator(object())
