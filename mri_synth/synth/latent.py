"""The ``latent`` generator: class-conditional diffusion in the latent space of a small autoencoder.

Latent diffusion (Rombach et al. 2022; Pinaya et al. 2022 for brain MRI) built from Hugging Face ``diffusers``
parts: an ``AutoencoderKL`` maps a 128 px slice to a small latent (``latent_channels`` x 32 x 32 at the default
4x downsampling) and back; a class-conditional ``UNet2DModel`` learns DDPM noise prediction on those latents. A
*variation* of a source is SDEdit in latent space: the source's latent is noised to ``strength`` and denoised
under the source's class with DDIM, then decoded at 128 px. :meth:`LatentDiffusionGenerator.sample` draws new
slices of a class from pure latent noise.

Why: a pixel-space model that fits a CPU budget works at 32 px and makes blurred blobs when upsampled; in a 4x
smaller latent the UNet trains about 18x faster per image than at 128 px, and the autoencoder keeps ventricle and
sulcus edges. The autoencoder is where a CPU budget goes (:meth:`LatentDiffusionConfig.cpu`).

Both networks learn only from the images passed to :meth:`LatentDiffusionGenerator.train` (a trial's real
subset): the fingerprint includes a hash of their ids. Sampling, the bank protocol and the DDIM loop are shared
with :class:`~mri_synth.synth.diffusion.DiffusionGenerator`; the cache, noise and conversions with
:mod:`mri_synth.synth.trained`; building, training and running the autoencoder with :mod:`mri_synth.synth.autoencoder`.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from mri_synth.synth import autoencoder as ae
from mri_synth.synth.base import IMAGE_SIZE, check_sources, ids_key, variant_seed
from mri_synth.synth.diffusion import NUM_CLASSES, DiffusionGenerator
from mri_synth.synth.latent_config import PRESETS, LatentDiffusionConfig  # noqa: F401  (PRESETS read from here too)
from mri_synth.synth.trained import (
    atomic_folder,
    clocks,
    load_or_train,
    provenance,
    seeded_noise,
    to_model,
    to_uint8,
)


class LatentDiffusionGenerator(DiffusionGenerator):
    """An autoencoder and a class-conditional DDPM/DDIM UNet in its latent space; variations by latent SDEdit.

    Args:
        config: Model and sampling settings; see :class:`LatentDiffusionConfig` and its presets.
        device: Where to train and sample; default CUDA when available, else the CPU.
        cpu_threads: Torch CPU threads while training and sampling (None keeps torch's setting); not part of the
            fingerprint.
    """

    name = "latent"
    training_version = 1  # bump when training changes: cached weights of older code are then trained again

    def __init__(self, config: LatentDiffusionConfig | None = None, *, device: str | torch.device | None = None,
                 cpu_threads: int | None = None) -> None:
        super().__init__(device=device, cpu_threads=cpu_threads)
        self.config = config or LatentDiffusionConfig()  # type: ignore[assignment]
        self.autoencoder: AutoencoderKL | None = None
        self.latent_scale = 1.0  # 1 / std of the training latents, so the UNet sees unit variance
        self.ae_losses: list[float] = []
        self.seconds: dict[str, float] = {}  # wall and CPU time of each training stage

    def _autocast(self):
        return ae.bf16_autocast(self.device, self.config.bf16)

    def _build(self, seed: int) -> UNet2DModel:
        c = self.config
        down, up = ["DownBlock2D"] * len(c.channels), ["UpBlock2D"] * len(c.channels)
        if c.attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        torch.manual_seed(seed + 1)
        return UNet2DModel(sample_size=c.latent_size, in_channels=c.latent_channels, out_channels=c.latent_channels,
                           block_out_channels=c.channels, layers_per_block=c.layers_per_block,
                           down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=8,
                           num_class_embeds=NUM_CLASSES + (1 if c.class_dropout else 0),  # the last: no class
                           add_attention=c.attention).to(self.device)

    def _require_autoencoder(self) -> AutoencoderKL:
        self._require_trained()
        assert self.autoencoder is not None
        return self.autoencoder

    def train(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], *, seed: int = 0,
              progress: bool = True) -> "LatentDiffusionGenerator":
        """Train the autoencoder, then the latent UNet, from scratch on exactly these real images.

        Args:
            images: ``uint8[N, 1, 128, 128]`` real slices (a trial's real subset, never its held-out data).
            labels: ``int64[N]`` their classes.
            ids: Their ids; a hash of them keys the fingerprint.
            seed: Seeds weight init, batch order, flips, noise levels and noise.
            progress: Show progress bars with the losses.

        Returns:
            ``self``, trained.
        """
        check_sources(images, labels, ids)
        with self._threads():
            self._train(images, labels, seed, progress)
        self.train_key, self.train_seed, self.n_train = ids_key(ids), seed, len(ids)
        self.provenance = provenance(self.device)
        return self

    def _train(self, images: torch.Tensor, labels: torch.Tensor, seed: int, progress: bool) -> None:
        gen = torch.Generator().manual_seed(seed)
        x_all = to_model(images, IMAGE_SIZE, self.device)
        start = clocks()
        self.autoencoder, self.ae_losses = ae.train_autoencoder(self.config, x_all, seed, gen, self.device, progress)
        self._record("autoencoder", start)
        self._train_unet(x_all, labels, seed, gen, progress)

    def _train_unet(self, x_all: torch.Tensor, labels: torch.Tensor, seed: int, gen: torch.Generator,
                    progress: bool) -> None:
        """Train the latent UNet on the trained autoencoder's latents of ``[-1, 1]`` images."""
        c = self.config
        start = clocks()
        flipped = torch.cat([x_all, x_all.flip(-1)]) if c.hflip else x_all
        assert self.autoencoder is not None  # trained (or loaded) before the UNet
        mean, std = ae.encode_distribution(self.autoencoder, flipped, self.device, c.bf16)
        self.latent_scale = float(1.0 / mean.std())
        y_all = (torch.cat([labels, labels]) if c.hflip else labels).to(self.device)
        unet = self._build(seed)
        scheduler = DDPMScheduler(num_train_timesteps=c.timesteps, beta_schedule=c.beta_schedule)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=c.learning_rate)
        ema = None
        if c.ema_decay:
            from diffusers.training_utils import EMAModel

            ema = EMAModel(unet.parameters(), decay=c.ema_decay, use_ema_warmup=True)
        t_max = max(1, math.ceil(c.train_max_strength * c.timesteps))
        self.losses = []
        unet.train()
        bar = tqdm(ae.batches(len(mean), c.batch_size, c.train_steps, gen, c.hflip), total=c.train_steps,
                   desc="train latent unet", disable=not progress)
        for idx, _ in bar:  # flips are already in the latents
            i = idx.to(self.device)
            eps = torch.randn(mean[i].shape, generator=gen).to(self.device)
            z0 = (mean[i] + std[i] * eps) * self.latent_scale
            self._denoising_step(unet, scheduler, optimizer, ema, z0, y_all[i], t_max, gen)
            bar.set_postfix(loss=f"{self.losses[-1]:.4f}", refresh=False)
        if ema is not None:
            ema.copy_to(unet.parameters())
        self.unet = unet.eval()
        self._record("unet", start)

    def _denoising_step(self, unet: UNet2DModel, scheduler: DDPMScheduler, optimizer: torch.optim.Optimizer, ema: Any,
                        x0: torch.Tensor, labels: torch.Tensor, t_max: int, gen: torch.Generator) -> None:
        """One DDPM step; with ``class_dropout`` a share of the labels (drawn from ``gen`` first) is "no class"."""
        if self.config.class_dropout:
            drop = (torch.rand(len(labels), generator=gen) < self.config.class_dropout).to(labels.device)
            labels = torch.where(drop, torch.full_like(labels, NUM_CLASSES), labels)
        super()._denoising_step(unet, scheduler, optimizer, ema, x0, labels, t_max, gen)

    def _target(self, scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
                ) -> torch.Tensor:
        """The UNet's training target for ``config.prediction_type``."""
        kind = self.config.prediction_type
        if kind == "v_prediction":
            return scheduler.get_velocity(x0, noise, t)
        return x0 if kind == "sample" else noise

    def _ddim_options(self) -> dict[str, Any]:
        """No clipping of the predicted clean latent: latents at unit variance are not confined to [-1, 1] (DDIM's
        default clip to [-1, 1] shrank them and washed out the decoded contrast)."""
        return {"clip_sample": False, "prediction_type": self.config.prediction_type}

    def _record(self, stage: str, start: tuple[float, float]) -> None:
        wall, cpu = clocks()
        self.seconds[stage], self.seconds[f"{stage}_cpu"] = wall - start[0], cpu - start[1]

    def encode(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Scaled latents (posterior means) of ``uint8[N, 1, 128, 128]`` slices: what the UNet works on."""
        vae = self._require_autoencoder()
        with self._threads():
            x = to_model(images, IMAGE_SIZE, self.device)
            return ae.encode_distribution(vae, x, self.device, self.config.bf16, batch)[0] * self.latent_scale

    def decode(self, latents: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Scaled latents back to ``uint8[N, 1, 128, 128]`` slices."""
        vae = self._require_autoencoder()
        with self._threads():
            x = ae.decode_latents(vae, latents, self.latent_scale, self.device, self.config.bf16, batch)
        return to_uint8(x)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Encode and decode: the autoencoder's ceiling on what any variation can show."""
        return self.decode(self.encode(images))

    def _denoise(self, x: torch.Tensor, labels: torch.Tensor, strength: float) -> torch.Tensor:
        """DDIM from noise level ``strength``; with ``guidance_scale`` != 1 classifier-free guidance (Ho & Salimans
        2022): the prediction moves from the unconditional one past the class-conditional one by that factor."""
        w = self.config.guidance_scale
        if w == 1:
            with self._autocast():
                return super()._denoise(x, labels, strength).float()
        unet = self._require_trained()
        scheduler, steps = self._schedule(strength)
        y = labels.to(self.device)
        both = torch.cat([y, torch.full_like(y, NUM_CLASSES)])
        with torch.inference_mode(), self._threads(), self._autocast():
            for t in steps:
                cond, uncond = unet(torch.cat([x, x]), t.to(self.device), class_labels=both).sample.float().chunk(2)
                x = scheduler.step(uncond + w * (cond - uncond), t, x).prev_sample
        return x.float()

    def _latent_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        c = self.config
        return seeded_noise(seeds, (c.latent_channels, c.latent_size, c.latent_size)).to(self.device)

    def vary(self, images: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int], *,
             strength: float | None = None) -> torch.Tensor:
        """SDEdit in latent space: noise each source's latent to ``strength``, denoise under its label, decode.

        Returns:
            ``uint8[N, 1, 128, 128]`` variations, identical for identical seeds (on the CPU).
        """
        strength = self._vary_strength(images, seeds, strength)
        with self._sampling_layout():
            z0 = self.encode(images, self.config.sample_batch)
            scheduler, steps = self._schedule(strength)
            noisy = scheduler.add_noise(z0, self._latent_noise(seeds), steps[:1].repeat(len(z0)))
            return self.decode(self._denoise(noisy, labels, strength), self.config.sample_batch)

    @contextmanager
    def _sampling_layout(self) -> Iterator[None]:
        """With ``channels_last``: both networks' weights channels-last while sampling (a convolution then runs and
        returns channels-last), back to the default layout after, so training and saving never see it."""
        nets = [self._require_trained(), self._require_autoencoder()] if self.config.channels_last else []
        for net in nets:
            net.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            for net in nets:
                net.to(memory_format=torch.contiguous_format)

    def sample(self, labels: torch.Tensor | Sequence[int], seed: int) -> torch.Tensor:
        """New slices of the given classes from pure latent noise: ``uint8[len(labels), 1, 128, 128]``."""
        if self.config.train_max_strength < 1:
            raise ValueError(f"this model learned noise levels up to {self.config.train_max_strength} only; "
                             "sampling from pure noise needs a model trained with train_max_strength=1.0")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        seeds = [variant_seed(seed, "sample", i) for i in range(len(labels))]
        return self.decode(self._denoise(self._latent_noise(seeds), labels, 1.0))

    def describe(self) -> dict[str, Any]:
        """Name, model, settings and the key of the training data (what the fingerprint hashes)."""
        unet, vae = self._require_trained(), self._require_autoencoder()
        n_unet, n_vae = (sum(p.numel() for p in m.parameters()) / 1e6 for m in (unet, vae))
        c = self.config
        return {"name": self.name, "config": asdict(c), "train_ids_sha256": self.train_key,
                "model": f"latent-ddpm-ae{n_vae:.2f}M-unet{n_unet:.2f}M-{c.latent_channels}x{c.latent_size}px",
                "train_seed": self.train_seed, "n_train": self.n_train}

    def save(self, path: str | os.PathLike) -> Path:
        """Write both networks, the latent scale, training key and loss curves to a folder, atomically."""
        unet, vae = self._require_trained(), self._require_autoencoder()
        meta = {"config": asdict(self.config), "train_ids_sha256": self.train_key, "train_seed": self.train_seed,
                "n_train": self.n_train, "losses": self.losses, "ae_losses": self.ae_losses,
                "latent_scale": self.latent_scale, "seconds": self.seconds, "provenance": self.provenance}
        with atomic_folder(path) as tmp:
            unet.save_pretrained(tmp / "unet")
            vae.save_pretrained(tmp / "autoencoder")
            (tmp / "generator.json").write_text(json.dumps(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device | None = None,
             cpu_threads: int | None = None) -> "LatentDiffusionGenerator":
        """Read a generator written by :meth:`save`."""
        path = Path(path)
        if not (path / "generator.json").exists() or not (path / "autoencoder").is_dir():
            raise FileNotFoundError(f"{path} holds no saved LatentDiffusionGenerator (no generator.json and "
                                    "autoencoder/); train one and call .save(path)")
        meta = json.loads((path / "generator.json").read_text())
        self = cls(LatentDiffusionConfig(**meta["config"]), device=device, cpu_threads=cpu_threads)
        # low_cpu_mem_usage=False: what diffusers falls back to without accelerate (not a dependency), stated so it
        # does not advise installing accelerate on every load
        self.unet = UNet2DModel.from_pretrained(path / "unet", low_cpu_mem_usage=False).to(self.device).eval()
        self.autoencoder = AutoencoderKL.from_pretrained(path / "autoencoder", low_cpu_mem_usage=False)
        self.autoencoder = self.autoencoder.to(self.device).eval()
        self.train_key, self.train_seed, self.n_train = meta["train_ids_sha256"], meta["train_seed"], meta["n_train"]
        self.losses, self.ae_losses = meta["losses"], meta["ae_losses"]
        self.latent_scale, self.seconds = meta["latent_scale"], meta["seconds"]
        self.provenance = meta.get("provenance", {})
        return self

    @classmethod
    def cached(cls, config: LatentDiffusionConfig, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str],
               *, seed: int = 0, cache_root: str | os.PathLike | None = None,
               device: str | torch.device | None = None, cpu_threads: int | None = None,
               progress: bool = True) -> "LatentDiffusionGenerator":
        """Load the generator trained on exactly these ids with this config and seed, or train and save it.

        The cache lives in ``cache_root`` (default ``mri_synth.paths.cache_dir()/"latent"``), one folder per
        (training settings, training code version, ids, seed): any sampling setting reuses it (``load_or_train``).
        """
        return load_or_train(cls, config, images, labels, ids, seed=seed, cache_root=cache_root, device=device,
                             cpu_threads=cpu_threads, progress=progress)
