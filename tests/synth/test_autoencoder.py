"""The latent generator's autoencoder: its loss by hand, the seeded batches, and the shapes it encodes and decodes."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mri_synth.synth import autoencoder as ae
from mri_synth.synth.trained import clocks

TINY = SimpleNamespace(ae_channels=(8, 8), latent_channels=2, ae_layers_per_block=1, ae_norm_groups=2, ae_steps=3,
                       ae_batch_size=4, ae_learning_rate=1e-2, kl_weight=1e-6, gradient_weight=0.5, hflip=True,
                       bf16=False)
"""An AutoencoderSettings: two levels (one 2x downsampling), 2 latent channels, three steps."""

CPU = torch.device("cpu")


def test_reconstruction_loss_by_hand():
    target = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    recon = torch.tensor([[[[1.0, 1.0], [2.0, 5.0]]]])
    pixels = (1 + 0 + 0 + 2) / 4
    # horizontal differences: target (1, 1), recon (0, 3) -> |1| + |2| over 2; vertical: target (2, 2), recon (1, 4)
    horizontal, vertical = (1 + 2) / 2, (1 + 2) / 2
    assert ae.reconstruction_loss(recon, target, 0.0).item() == pytest.approx(pixels)
    assert ae.reconstruction_loss(recon, target, 0.5).item() == pytest.approx(pixels + 0.5 * (horizontal + vertical))
    assert ae.reconstruction_loss(target, target, 2.0).item() == 0.0
    # a constant shift changes the pixels' term only: the gradients of both images agree
    shifted = target + 0.25
    assert ae.reconstruction_loss(shifted, target, 10.0).item() == pytest.approx(0.25)


def test_reconstruction_loss_matches_torch_on_a_batch():
    gen = torch.Generator().manual_seed(0)
    recon, target = torch.randn(3, 1, 8, 8, generator=gen), torch.randn(3, 1, 8, 8, generator=gen)
    expected = (F.l1_loss(recon, target)
                + 0.3 * F.l1_loss(recon.diff(dim=-1), target.diff(dim=-1))
                + 0.3 * F.l1_loss(recon.diff(dim=-2), target.diff(dim=-2)))
    assert ae.reconstruction_loss(recon, target, 0.3).item() == pytest.approx(expected.item(), rel=1e-6)


def test_batches_are_epochs_of_seeded_permutations():
    out = list(ae.batches(10, 4, 5, torch.Generator().manual_seed(0), hflip=False))
    assert len(out) == 5 and all(len(idx) == 4 and len(flip) == 4 for idx, flip in out)
    order = torch.cat([idx for idx, _ in out])  # 20 indices: two whole epochs of 10
    assert sorted(order[:10].tolist()) == list(range(10)) and sorted(order[10:].tolist()) == list(range(10))
    assert not any(flip.any() for _, flip in out)  # no flips without hflip
    again = list(ae.batches(10, 4, 5, torch.Generator().manual_seed(0), hflip=False))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(out, again))
    other = torch.cat([idx for idx, _ in ae.batches(10, 4, 5, torch.Generator().manual_seed(1), hflip=False)])
    assert not torch.equal(order, other)


def test_flips_are_drawn_whether_or_not_they_are_used():
    flipped = list(ae.batches(10, 4, 6, torch.Generator().manual_seed(3), hflip=True))
    plain = list(ae.batches(10, 4, 6, torch.Generator().manual_seed(3), hflip=False))
    # the same draws from the generator: the same batches with or without hflip (recorded results depend on it)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(flipped, plain))
    flags = torch.cat([flip for _, flip in flipped])
    assert flags.dtype == torch.bool and 0 < flags.sum() < len(flags)
    small = list(ae.batches(3, 8, 2, torch.Generator().manual_seed(0), hflip=False))  # fewer images than a batch
    assert [sorted(idx.tolist()) for idx, _ in small] == [[0, 1, 2], [0, 1, 2]]  # no image twice in one batch


def test_bf16_autocast_only_when_asked():
    with ae.bf16_autocast(CPU, False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with ae.bf16_autocast(CPU, True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_clocks_read_wall_and_cpu_time():
    wall, cpu = clocks()
    sum(i * i for i in range(20000))
    wall2, cpu2 = clocks()
    assert wall2 > wall and cpu2 >= cpu


def test_a_seeded_autoencoder_encodes_and_decodes_at_the_promised_shapes():
    first, again = ae.build_autoencoder(TINY, 0, CPU), ae.build_autoencoder(TINY, 0, CPU)
    assert (first.config.in_channels, first.config.out_channels, first.config.latent_channels) == (1, 1, 2)
    assert tuple(first.config.block_out_channels) == (8, 8) and first.config.sample_size == 128
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    other = ae.build_autoencoder(TINY, 1, CPU)
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))
    # the network is convolutional: 32 px slices keep the test fast; two levels halve the side once
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, std = ae.encode_distribution(first, x, CPU, bf16=False, batch=2)  # batches of 2, 2 and 1
    assert mean.shape == std.shape == (5, 2, 16, 16) and (std > 0).all() and mean.dtype == torch.float32
    whole, _ = ae.encode_distribution(first, x, CPU, bf16=False, batch=64)
    torch.testing.assert_close(mean, whole, atol=1e-5, rtol=1e-5)  # batching does not change the result
    images = ae.decode_latents(first, mean * 3.0, 3.0, CPU, bf16=False, batch=2)
    assert images.shape == (5, 1, 32, 32) and images.dtype == torch.float32
    torch.testing.assert_close(images, ae.decode_latents(first, mean, 1.0, CPU, bf16=False), atol=1e-5, rtol=1e-5)


def test_training_returns_a_frozen_model_and_one_loss_per_step():
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    vae, losses = ae.train_autoencoder(TINY, x, 0, torch.Generator().manual_seed(0), CPU, progress=False)
    assert len(losses) == TINY.ae_steps and all(loss > 0 for loss in losses)
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    _, again = ae.train_autoencoder(TINY, x, 0, torch.Generator().manual_seed(0), CPU, progress=False)
    assert again == losses  # seeded: weights, batches, flips and posterior samples
