"""The latent diffusion generator end to end at toy size on the CPU: train, vary, sample, save, load, cache, bank."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mri_synth.data.sampling import stratified_sample
from mri_synth.synth import SyntheticBank
from mri_synth.synth.latent import LatentDiffusionConfig, LatentDiffusionGenerator
from mri_synth.synth.trained import SAMPLING_FIELDS, sdedit_schedule, training_settings

TOY = LatentDiffusionConfig.toy()
TINY = LatentDiffusionConfig.toy(ae_steps=3, train_steps=3)  # where only the code path matters


def make_sources(n: int = 16, seed: int = 0):
    """Two classes that differ in brightness, so a few training steps can tell them apart."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 40, (n, 1, 128, 128), generator=gen)
    labels = torch.tensor([0, 2] * (n // 2))
    images = (base + 160 * (labels == 2).view(-1, 1, 1, 1)).to(torch.uint8)
    return images, labels, [f"train/{i:05d}" for i in range(n)]


def weights(generator: LatentDiffusionGenerator) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for part, model in (("ae", generator.autoencoder), ("unet", generator.unet))
            for k, v in model.state_dict().items()}


def same_weights(a: LatentDiffusionGenerator, b: LatentDiffusionGenerator) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def toy_sources():
    return make_sources()


@pytest.fixture(scope="module")
def trained(toy_sources):
    images, labels, ids = toy_sources
    return LatentDiffusionGenerator(TOY, device="cpu", cpu_threads=1).train(images, labels, ids, seed=1,
                                                                            progress=False)


def test_both_networks_learn(trained):
    for losses, steps in ((trained.ae_losses, TOY.ae_steps), (trained.losses, TOY.train_steps)):
        assert len(losses) == steps and all(v == v for v in losses)  # no NaN
        assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert trained.latent_scale > 0 and {"autoencoder", "autoencoder_cpu", "unet", "unet_cpu"} <= set(trained.seconds)


def test_latents_and_reconstructions_have_the_promised_shapes(trained, toy_sources):
    images, _, _ = toy_sources
    z = trained.encode(images[:3])
    assert z.shape == (3, TOY.latent_channels, TOY.latent_size, TOY.latent_size) == (3, 2, 32, 32)
    recon = trained.reconstruct(images[:4])
    assert recon.shape == (4, 1, 128, 128) and recon.dtype == torch.uint8
    dark, bright = recon[0::2].float().mean(), recon[1::2].float().mean()
    assert bright - dark > 40  # the autoencoder carries each slice's brightness through the latent


def test_vary_is_seeded_and_stays_near_the_source(trained, toy_sources):
    images, labels, _ = toy_sources
    a = trained.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4])
    assert a.shape == (4, 1, 128, 128) and a.dtype == torch.uint8
    assert torch.equal(a, trained.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4]))
    assert not torch.equal(a, trained.vary(images[:4], labels[:4], seeds=[5, 6, 7, 8]))
    near = trained.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4], strength=0.2).float().mean((1, 2, 3))
    assert near[1::2].min() - near[0::2].max() > 15  # a small strength keeps dark sources darker than bright ones
    with pytest.raises(ValueError, match="one seed per image"):
        trained.vary(images[:2], labels[:2], seeds=[1])
    with pytest.raises(ValueError, match="strength must be in"):
        trained.vary(images[:2], labels[:2], seeds=[1, 2], strength=1.5)


def test_sdedit_keeps_the_latents_scale_unclipped(trained, toy_sources):
    """DDIM's default clip of the predicted clean sample to [-1, 1] shrank unit-variance latents; it is off."""
    scheduler, steps = trained._schedule(0.3)
    assert not scheduler.config.clip_sample and scheduler.config.prediction_type == "epsilon"
    z = trained.encode(toy_sources[0][:4])
    assert z.abs().max() > 1  # latents at unit variance leave [-1, 1]: a clip would change them


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_other_prediction_targets_train_and_vary(toy_sources, kind):
    images, labels, ids = toy_sources
    model = LatentDiffusionGenerator(LatentDiffusionConfig.toy(prediction_type=kind, ema_decay=0.9), device="cpu",
                                     cpu_threads=1).train(images, labels, ids, seed=1, progress=False)
    assert sum(model.losses[-5:]) < sum(model.losses[:5]) and model._schedule(0.5)[0].config.prediction_type == kind
    near = model.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4], strength=0.2).float().mean((1, 2, 3))
    assert near[1::2].min() - near[0::2].max() > 15  # dark sources stay darker than bright ones


def test_classifier_free_guidance_trains_a_no_class_label_and_guides(toy_sources):
    images, labels, ids = toy_sources
    config = LatentDiffusionConfig.toy(class_dropout=0.3, guidance_scale=2.0)
    model = LatentDiffusionGenerator(config, device="cpu", cpu_threads=1).train(images, labels, ids, seed=1,
                                                                               progress=False)
    assert model.unet.class_embedding.num_embeddings == 5  # 4 classes and "no class"
    out = model.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4], strength=0.2)
    assert out.shape == (4, 1, 128, 128) and torch.equal(out, model.vary(images[:4], labels[:4], [1, 2, 3, 4],
                                                                         strength=0.2))
    plain = replace(config, guidance_scale=1.0)
    model.config = plain  # the same weights without guidance: different images
    assert not torch.equal(out, model.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4], strength=0.2))


def test_target_matches_the_scheduler_definitions(trained):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    x0, noise, t = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4), torch.tensor([10, 700])
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    for kind, expected in (("epsilon", noise), ("sample", x0), ("v_prediction", v)):
        model = LatentDiffusionGenerator(LatentDiffusionConfig.toy(prediction_type=kind))
        assert torch.allclose(model._target(scheduler, x0, noise, t), expected, atol=1e-6)


def test_sample_draws_new_images_per_class(trained):
    out = trained.sample([0, 2, 2], seed=3)
    assert out.shape == (3, 1, 128, 128) and out.dtype == torch.uint8
    assert torch.equal(out, trained.sample([0, 2, 2], seed=3))


def test_sampling_from_noise_is_refused_for_an_sdedit_only_model(toy_sources):
    images, labels, ids = toy_sources
    model = LatentDiffusionGenerator(LatentDiffusionConfig.toy(ae_steps=1, train_steps=1, train_max_strength=0.6,
                                                               strength=0.4), device="cpu", cpu_threads=1)
    model.train(images[:4], labels[:4], ids[:4], progress=False)
    with pytest.raises(ValueError, match="train_max_strength=1.0"):
        model.sample([0], seed=0)


def test_save_load_gives_the_same_images_and_fingerprint(trained, toy_sources, tmp_path, diffusers_log):
    images, labels, _ = toy_sources
    with diffusers_log() as log:
        loaded = LatentDiffusionGenerator.load(trained.save(tmp_path / "gen"), device="cpu")
    assert not [m for m in log if "accelerate" in m]  # no advice to install a package the study does not use
    assert loaded.fingerprint == trained.fingerprint and same_weights(loaded, trained)
    assert torch.equal(loaded.vary(images[:3], labels[:3], [9, 9, 9]), trained.vary(images[:3], labels[:3], [9, 9, 9]))
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError, match="no saved LatentDiffusionGenerator"):
        LatentDiffusionGenerator.load(tmp_path / "nothing")
    with pytest.raises(RuntimeError, match="not trained"):
        LatentDiffusionGenerator(TOY).fingerprint


def test_cached_trains_once_and_a_hit_returns_the_same_weights(toy_sources, tmp_path):
    images, labels, ids = toy_sources
    kwargs = dict(cache_root=tmp_path, device="cpu", cpu_threads=1, progress=False)
    first = LatentDiffusionGenerator.cached(TINY, images, labels, ids, seed=2, **kwargs)
    again = LatentDiffusionGenerator.cached(TINY, images, labels, ids, seed=2, **kwargs)
    assert len(list(tmp_path.iterdir())) == 1 and again.fingerprint == first.fingerprint
    assert same_weights(again, first) and again.losses == first.losses and again.latent_scale == first.latent_scale
    other = LatentDiffusionGenerator.cached(TINY, images[:8], labels[:8], ids[:8], seed=2, **kwargs)
    assert len(list(tmp_path.iterdir())) == 2 and other.fingerprint != first.fingerprint


def test_canary_images_outside_the_subset_never_reach_the_generator():
    """Change every image a trial pretends not to have: the trained generator is bit-identical."""
    images, labels, ids = make_sources(24, seed=5)
    subset = stratified_sample(labels, 0.5, seed=0)
    changed = images.clone()
    outside = torch.ones(len(images), dtype=torch.bool)
    outside[subset] = False
    changed[outside] = 255 - changed[outside]

    def train_on(pool: torch.Tensor) -> LatentDiffusionGenerator:
        idx = stratified_sample(labels, 0.5, seed=0)  # drawn from labels only, as the study draws it
        return LatentDiffusionGenerator(TINY, device="cpu", cpu_threads=1).train(
            pool[idx], labels[idx], [ids[i] for i in idx], seed=0, progress=False)

    reference = train_on(images)
    assert same_weights(train_on(changed), reference)
    inside = images.clone()
    inside[subset[0]] = 255 - inside[subset[0]]
    assert not same_weights(train_on(inside), reference)  # the canary can fail: an image inside the subset counts


def test_bank_fill_with_latent_generator_matches_direct_variations(trained, toy_sources, tmp_path):
    images, labels, ids = toy_sources
    bank = SyntheticBank(tmp_path)
    summary = bank.fill(trained, images[:3], labels[:3], ids[:3], n_variants=2, seed=4, progress=False)
    assert summary.made == 6 and summary.cost_usd == 0 and summary.fingerprint.startswith("latent-")
    m = bank.manifest()
    row = m[(m.source_id == ids[1]) & (m.variant == 1)].iloc[0]
    out, _, _, src = bank.sample(ids[:3], k=6, seed=0)
    direct = trained.vary(images[1:2], labels[1:2], seeds=[int(row.seed)])
    assert any(torch.equal(o, direct[0]) for o, s in zip(out, src) if s == ids[1])


def test_real_size_preset_trains_and_varies():
    """The GPU preset's code path (wide autoencoder, attention, EMA) end to end, shrunk to two steps."""
    config = LatentDiffusionConfig.gpu(ae_steps=2, train_steps=2, ae_batch_size=2, batch_size=2, ddim_steps=2)
    assert config.attention and config.ema_decay > 0 and config.latent_size == 32
    images, labels, ids = make_sources(4)
    model = LatentDiffusionGenerator(config, device="cpu", cpu_threads=1).train(images, labels, ids, progress=False)
    out = model.vary(images[:2], labels[:2], seeds=[1, 2])
    assert out.shape == (2, 1, 128, 128) and out.dtype == torch.uint8


# -- the weights' key: sampling settings reuse the trained model, training settings train again --------------

SAMPLING_CHANGES = {"strength": 0.3, "sampler": "dpm++", "ddim_steps": 6, "guidance_scale": 2.0, "sample_batch": 5,
                    "channels_last": True}


@pytest.fixture(scope="module")
def cached_toy(sample_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    split = sample_data.train.subset(range(24))
    config = LatentDiffusionConfig.toy(class_dropout=0.1)
    generator = LatentDiffusionGenerator.cached(config, split.images, split.labels, split.ids, seed=0,
                                                cache_root=root, device="cpu", cpu_threads=1, progress=False)
    return root, split, config, generator


def test_the_sampling_fields_are_exactly_those_left_out_of_the_weights_key():
    config = LatentDiffusionConfig.cpu()
    assert set(SAMPLING_CHANGES) == set(SAMPLING_FIELDS)
    assert set(training_settings(config)) == set(vars(config)) - set(SAMPLING_FIELDS)


@pytest.mark.parametrize("field", sorted(SAMPLING_CHANGES))
def test_changing_a_sampling_setting_reuses_the_weights_and_makes_new_variations(cached_toy, field, monkeypatch):
    root, split, config, first = cached_toy
    assert first.from_cache is False and first.provenance["torch"] and first.seconds["unet_cpu"] > 0
    monkeypatch.setattr(LatentDiffusionGenerator, "train", lambda *a, **k: pytest.fail("trained again"))
    changed = replace(config, **{field: SAMPLING_CHANGES[field]})
    again = LatentDiffusionGenerator.cached(changed, split.images, split.labels, split.ids, seed=0, cache_root=root,
                                            device="cpu", cpu_threads=1, progress=False)
    assert again.from_cache and getattr(again.config, field) == SAMPLING_CHANGES[field]
    assert again.fingerprint != first.fingerprint  # the bank keys variations by the sampling settings too
    assert len(list(root.iterdir())) == 1  # one set of weights on disk


def test_changing_a_training_setting_trains_again(cached_toy):
    root, split, config, first = cached_toy
    before = len(list(root.iterdir()))
    other = LatentDiffusionGenerator.cached(replace(config, train_steps=config.train_steps + 1), split.images,
                                            split.labels, split.ids, seed=0, cache_root=root, device="cpu",
                                            cpu_threads=1, progress=False)
    assert other.from_cache is False and len(list(root.iterdir())) == before + 1


def test_multistep_samplers_start_where_sdedit_starts():
    config = LatentDiffusionConfig.cpu_fast()
    for sampler in ("ddim", "dpm++", "unipc"):
        scheduler, steps = sdedit_schedule(replace(config, sampler=sampler, ddim_steps=10), 0.5)
        assert len(steps) == 5 and steps[0] <= 0.5 * config.timesteps
    with pytest.raises(ValueError, match=r"sampler must be one of \('ddim', 'dpm\+\+', 'unipc'\)"):
        LatentDiffusionConfig(sampler="euler")
