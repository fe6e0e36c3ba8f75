"""The ``latent`` generator's autoencoder: build, train, encode and decode the ``AutoencoderKL`` it diffuses in.

A Hugging Face ``diffusers`` ``AutoencoderKL`` maps a ``[-1, 1]`` 128 px slice to a small latent
(``latent_channels`` x 32 x 32 at the default 4x downsampling) and back. It trains on L1 reconstruction plus L1 on
image gradients (:func:`reconstruction_loss`, so ventricle and sulcus edges weigh beside intensities) and a small KL
term. Here, as plain functions of a config, a device and a generator:

- :func:`build_autoencoder` and :func:`train_autoencoder`: the network from a config's ``ae_*`` settings, trained
  on exactly the images passed in, batches, flips and posterior samples drawn from the caller's generator;
- :func:`encode_distribution` / :func:`decode_latents`: the posterior mean and std of images, and latents back to
  images, in batches;
- :func:`batches`: the seeded epochs of batch indices and flip flags both of ``latent``'s trainings draw;
- :func:`bf16_autocast`: the precision both networks run in.

What is left to :mod:`mri_synth.synth.latent`: the config (``LatentDiffusionConfig``; this module reads it through
:class:`AutoencoderSettings` and never imports ``latent``), the latent scale, the UNet, SDEdit and sampling, and
saving and caching the trained pair. The order of draws from the generator is part of the behaviour: cached
generators and recorded results depend on it.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from mri_synth.synth.base import IMAGE_SIZE


class AutoencoderSettings(Protocol):
    """What this module reads from a config (``LatentDiffusionConfig`` has all of it)."""

    @property
    def ae_channels(self) -> tuple[int, ...]: ...
    @property
    def latent_channels(self) -> int: ...
    @property
    def ae_layers_per_block(self) -> int: ...
    @property
    def ae_norm_groups(self) -> int: ...
    @property
    def ae_steps(self) -> int: ...
    @property
    def ae_batch_size(self) -> int: ...
    @property
    def ae_learning_rate(self) -> float: ...
    @property
    def kl_weight(self) -> float: ...
    @property
    def gradient_weight(self) -> float: ...
    @property
    def hflip(self) -> bool: ...
    @property
    def bf16(self) -> bool: ...


def _image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, gradient_weight: float) -> torch.Tensor:
    """L1 on pixels plus ``gradient_weight`` times L1 on horizontal and vertical finite differences."""
    loss = F.l1_loss(recon, target)
    if gradient_weight:
        loss = loss + gradient_weight * sum(F.l1_loss(r, t) for r, t in zip(_image_gradients(recon),
                                                                              _image_gradients(target)))
    return loss


def bf16_autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``bf16`` (about 2x faster on a CPU), else full precision."""
    if not bf16:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def batches(n: int, batch_size: int, steps: int, gen: torch.Generator, hflip: bool
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Indices and flip flags of ``steps`` batches: epochs of seeded permutations.

    Each batch draws its flips from ``gen`` (all False without ``hflip``), whether or not it uses them.
    """
    order = torch.empty(0, dtype=torch.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        flip = (torch.rand(len(idx), generator=gen) < 0.5) & hflip
        yield idx, flip


def build_autoencoder(config: AutoencoderSettings, seed: int, device: torch.device) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` for 1-channel 128 px slices, its weights seeded by ``seed``, on ``device``."""
    c = config
    n = len(c.ae_channels)
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=c.latent_channels,
                         block_out_channels=c.ae_channels, layers_per_block=c.ae_layers_per_block,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         norm_num_groups=c.ae_norm_groups,
                         mid_block_add_attention=False,  # attention over a 32x32 latent's 1024 positions: costly
                         sample_size=IMAGE_SIZE).to(device)


def train_autoencoder(config: AutoencoderSettings, x_all: torch.Tensor, seed: int, gen: torch.Generator,
                      device: torch.device, progress: bool) -> tuple[AutoencoderKL, list[float]]:
    """Train the autoencoder on ``[-1, 1]`` images; batches, flips and posterior samples drawn from ``gen``.

    Returns:
        The trained autoencoder (in eval mode, no gradients) and its loss at each step.
    """
    c = config
    vae = build_autoencoder(c, seed, device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=c.ae_learning_rate)
    # a short warm-up, then cosine decay to 0: the last, small steps sharpen the reconstructions
    lr = get_cosine_schedule_with_warmup(optimizer, math.ceil(0.05 * c.ae_steps), c.ae_steps)
    losses: list[float] = []
    vae.train()
    bar = tqdm(batches(len(x_all), c.ae_batch_size, c.ae_steps, gen, c.hflip), total=c.ae_steps,
               desc="train autoencoder", disable=not progress)
    for idx, flip in bar:
        x = x_all[idx.to(device)]
        x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(-1), x)
        with bf16_autocast(device, c.bf16):
            posterior = vae.encode(x).latent_dist
            z = posterior.sample(generator=gen) if device.type == "cpu" else posterior.sample()
            recon = vae.decode(z).sample
        loss = reconstruction_loss(recon.float(), x, c.gradient_weight) + c.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    return vae.eval().requires_grad_(False), losses


def encode_distribution(vae: AutoencoderKL, x: torch.Tensor, device: torch.device, bf16: bool, batch: int = 64
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the autoencoder's posterior for ``[-1, 1]`` images (unscaled)."""
    means, stds = [], []
    with torch.inference_mode(), bf16_autocast(device, bf16):
        for s in range(0, len(x), batch):
            dist = vae.encode(x[s:s + batch]).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, scale: float, device: torch.device, bf16: bool,
                   batch: int = 64) -> torch.Tensor:
    """Latents scaled by ``scale`` (divided by it here) back to float images ``[N, 1, 128, 128]`` on ``device``."""
    out = []
    with torch.inference_mode(), bf16_autocast(device, bf16):
        for s in range(0, len(latents), batch):
            out.append(vae.decode(latents[s:s + batch].to(device) / scale).sample.float())
    return torch.cat(out)
