"""The diffusion generator end to end at toy size on the CPU: train, vary, sample, save, load, bank."""

from __future__ import annotations

import pytest
import torch

from mri_synth.synth import DiffusionConfig, DiffusionGenerator, SyntheticBank

TOY = DiffusionConfig.toy(train_steps=30)


@pytest.fixture(scope="module")
def toy_sources():
    """Two classes that differ in brightness, so a few training steps can tell them apart."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(0, 40, (16, 1, 128, 128), generator=gen)
    labels = torch.tensor([0, 2] * 8)
    images = (base + 160 * (labels == 2).view(-1, 1, 1, 1)).to(torch.uint8)
    return images, labels, [f"train/{i:05d}" for i in range(16)]


@pytest.fixture(scope="module")
def trained(toy_sources):
    images, labels, ids = toy_sources
    return DiffusionGenerator(TOY, device="cpu", cpu_threads=1).train(images, labels, ids, seed=1, progress=False)


def test_training_lowers_the_loss(trained):
    losses = trained.losses
    assert len(losses) == TOY.train_steps and all(map(lambda v: v == v, losses))  # no NaN
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_vary_is_seeded_and_stays_near_the_source(trained, toy_sources):
    images, labels, _ = toy_sources
    a = trained.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4])
    b = trained.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4])
    c = trained.vary(images[:4], labels[:4], seeds=[5, 6, 7, 8])
    assert a.shape == (4, 1, 128, 128) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    # a small strength keeps each variation close to its own source: dark stays dark, bright stays bright
    near = trained.vary(images[:4], labels[:4], seeds=[1, 2, 3, 4], strength=0.2).float().mean((1, 2, 3))
    source = images[:4].float().mean((1, 2, 3))
    assert ((near - source).abs() < 60).all()
    with pytest.raises(ValueError, match="one seed per image"):
        trained.vary(images[:2], labels[:2], seeds=[1])


def test_sample_draws_new_images_per_class(trained):
    out = trained.sample([0, 2, 2], seed=3)
    assert out.shape == (3, 1, 128, 128) and out.dtype == torch.uint8
    assert torch.equal(out, trained.sample([0, 2, 2], seed=3))


def test_save_load_gives_the_same_images_and_fingerprint(trained, toy_sources, tmp_path, diffusers_log):
    images, labels, _ = toy_sources
    path = trained.save(tmp_path / "gen")
    with diffusers_log() as log:
        loaded = DiffusionGenerator.load(path, device="cpu")
    assert not [m for m in log if "accelerate" in m]  # no advice to install a package the study does not use
    assert loaded.fingerprint == trained.fingerprint
    assert torch.equal(loaded.vary(images[:3], labels[:3], [9, 9, 9]), trained.vary(images[:3], labels[:3], [9, 9, 9]))
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError, match="no saved DiffusionGenerator"):
        DiffusionGenerator.load(tmp_path / "nothing")


def test_fingerprint_keys_the_training_data(trained, toy_sources):
    images, labels, ids = toy_sources
    other = DiffusionGenerator(TOY, device="cpu", cpu_threads=1).train(images[:8], labels[:8], ids[:8], seed=1,
                                                                      progress=False)
    assert other.fingerprint != trained.fingerprint
    assert trained.describe()["train_ids_sha256"] != other.describe()["train_ids_sha256"]
    with pytest.raises(RuntimeError, match="not trained"):
        DiffusionGenerator(TOY).fingerprint


def test_cached_trains_once(toy_sources, tmp_path):
    images, labels, ids = toy_sources
    cfg = DiffusionConfig.toy(train_steps=3)
    first = DiffusionGenerator.cached(cfg, images, labels, ids, cache_root=tmp_path, device="cpu", cpu_threads=1,
                                        progress=False)
    again = DiffusionGenerator.cached(cfg, images, labels, ids, cache_root=tmp_path, device="cpu", cpu_threads=1,
                                        progress=False)
    assert again.losses == first.losses and len(list(tmp_path.iterdir())) == 1
    assert again.fingerprint == first.fingerprint


def test_an_unreadable_cached_generator_is_trained_again(toy_sources, tmp_path):
    images, labels, ids = toy_sources
    cfg = DiffusionConfig.toy(train_steps=3)
    first = DiffusionGenerator.cached(cfg, images, labels, ids, cache_root=tmp_path, device="cpu", cpu_threads=1,
                                        progress=False)
    [weights] = tmp_path.glob("*/unet/*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match=f"cached diffusion generator {weights.parent.parent} cannot be read"):
        again = DiffusionGenerator.cached(cfg, images, labels, ids, cache_root=tmp_path, device="cpu",
                                            cpu_threads=1, progress=False)
    assert again.losses == first.losses  # the same seeded training, saved again
    assert DiffusionGenerator.load(weights.parent.parent).losses == first.losses


def test_bank_fill_with_diffusion_matches_direct_variations(trained, toy_sources, tmp_path):
    images, labels, ids = toy_sources
    bank = SyntheticBank(tmp_path)
    summary = bank.fill(trained, images[:5], labels[:5], ids[:5], n_variants=2, seed=4, progress=False)
    assert summary.made == 10 and summary.cost_usd == 0
    out, out_labels, _, src = bank.sample(ids[:5], k=10, seed=0)
    m = bank.manifest()
    row = m[(m.source_id == ids[2]) & (m.variant == 1)].iloc[0]
    direct = trained.vary(images[2:3], labels[2:3], seeds=[int(row.seed)])
    stored = [o for o, s in zip(out, src) if s == ids[2]]
    assert any(torch.equal(o, direct[0]) for o in stored)  # the bank holds exactly what vary() makes
    assert out_labels.tolist() == [int(labels[ids.index(s)]) for s in src]


@pytest.mark.parametrize("bad, match", [
    (dict(image_size=48), "power of two"),
    (dict(strength=0.8, train_max_strength=0.5), "train_max_strength"),
    (dict(channels=(12, 24)), "multiples of 8"),
])
def test_config_errors_say_what_to_change(bad, match):
    with pytest.raises(ValueError, match=match):
        DiffusionConfig.toy(**bad)


def test_real_size_preset_trains_and_varies_at_128_px():
    """The GPU preset's code path (128 px, attention, EMA) end to end, shrunk to two steps so the CPU can run it."""
    from mri_synth.synth.diffusion import DiffusionConfig, DiffusionGenerator

    config = DiffusionConfig.gpu(train_steps=2, batch_size=2, ddim_steps=2)
    assert config.image_size == 128 and config.attention and config.ema_decay > 0
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (4, 1, 128, 128), generator=gen, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    model = DiffusionGenerator(config, device="cpu").train(images, labels, [f"s{i}" for i in range(4)],
                                                           progress=False)
    assert len(model.losses) == 2 and all(torch.isfinite(torch.tensor(model.losses)))
    out = model.vary(images[:2], labels[:2], seeds=[1, 2])
    assert out.shape == (2, 1, 128, 128) and out.dtype == torch.uint8


def test_presets_are_picked_by_name_and_an_unknown_one_is_refused():
    from mri_synth.synth.diffusion import PRESETS

    for name in PRESETS:
        assert DiffusionConfig.preset(name, train_steps=7) == getattr(DiffusionConfig, name)(train_steps=7)
    with pytest.raises(ValueError,
                       match=r"diffusion preset must be one of \('toy', 'small', 'quick', 'gpu'\), got 'replace'"):
        DiffusionConfig.preset("replace")
