"""The ``diffusion`` generator: a class-conditional denoising diffusion model trained locally on real slices.

Built from Hugging Face ``diffusers`` parts: a ``UNet2DModel`` with a class embedding (one per dementia class),
trained with DDPM's noise-prediction loss, sampled with DDIM. A *variation* of a source is SDEdit: the source is
noised to ``strength`` (0..1 of the noise schedule) and denoised under its own class label, the closest local
analogue of an image-variation API. :meth:`DiffusionGenerator.sample` draws new slices of a class from pure noise.

Size: the model works at ``image_size`` (16-128 px); sources are area-downsampled to it and results bilinearly
upsampled to 128. Training cost grows fast with the size, so CPU runs use small models briefly
(:meth:`DiffusionConfig.toy`, :meth:`DiffusionConfig.quick`); the real size (:meth:`DiffusionConfig.gpu`) wants a
GPU. Measured training rates, dated: ``benchmarks/README.md``.

No information leaves the machine, and a model learns only from the images passed to :meth:`train`: its
``fingerprint`` includes a hash of their ids, so a bank never mixes generators trained on different subsets.
Storage of the variations is the bank's; which real subset to train on is the study's.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from mri_synth.data.types import IMAGE_SIZE, NUM_CLASSES
from mri_synth.synth.base import SourceResult, check_sources, fingerprint_of, ids_key, variant_seed
from mri_synth.synth.trained import (
    atomic_folder,
    check_sdedit_settings,
    clocks,
    cpu_threads,
    load_or_train,
    pick_preset,
    provenance,
    sdedit_schedule,
    seeded_noise,
    to_model,
    to_uint8,
)

PRESETS = ("toy", "small", "quick", "gpu")
"""The sizes of the generator, each a ``DiffusionConfig`` class method; ``DiffusionConfig.preset(name)`` picks one."""


@dataclass(frozen=True)
class DiffusionConfig:
    """Everything that shapes a trained diffusion generator (all of it enters the fingerprint)."""

    image_size: int = 32  # model resolution; 128 / image_size must be a power of two
    channels: tuple[int, ...] = (32, 64, 64)  # UNet width per level; one down-sampling between levels
    layers_per_block: int = 1
    attention: bool = False  # self-attention at the lowest level: worth it at 64-128 px on a GPU
    timesteps: int = 1000  # DDPM noise levels
    beta_schedule: str = "squaredcos_cap_v2"  # the cosine schedule keeps small images from drowning in noise
    train_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-4
    ema_decay: float = 0.0  # 0 disables; ~0.999 for long GPU runs (with warm-up)
    hflip: bool = True  # axial slices are near-symmetric: flips double the few real images of small classes
    train_max_strength: float = 1.0  # train only noise levels t < this * T (SDEdit never goes further)
    strength: float = 0.5  # SDEdit: 0 returns the source, 1 ignores it
    ddim_steps: int = 25  # sampler steps over the whole schedule; SDEdit runs strength * ddim_steps of them
    sampler: str = "ddim"  # how SDEdit integrates: ddim, dpm++ or unipc (trained.SAMPLERS); a sampling setting

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        levels = len(self.channels) - 1
        ratio = IMAGE_SIZE / self.image_size
        if ratio < 1 or ratio != int(ratio) or (int(ratio) & (int(ratio) - 1)):
            raise ValueError(f"image_size must be 128 divided by a power of two (16, 32, 64, 128), got "
                             f"{self.image_size}")
        if self.image_size % (2**levels) or self.image_size >> levels < 4:
            raise ValueError(f"image_size {self.image_size} is too small for {len(self.channels)} UNet levels; "
                             "use fewer channels entries or a larger image_size")
        if any(c % 8 for c in self.channels):
            raise ValueError(f"channels must be multiples of 8 (group norm uses 8 groups), got {self.channels}")
        check_sdedit_settings(self)
        if min(self.train_steps, self.batch_size, self.ddim_steps, self.timesteps) < 1:
            raise ValueError("train_steps, batch_size, ddim_steps and timesteps must all be >= 1")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DiffusionConfig":
        """The preset called ``name`` (one of ``PRESETS``) with ``overrides`` applied."""
        return pick_preset(cls, PRESETS, "diffusion", name, overrides)

    @classmethod
    def toy(cls, **overrides: Any) -> "DiffusionConfig":
        """Seconds on a CPU: for tests and the quick notebook profile; the images are blurry."""
        return replace(cls(image_size=16, channels=(16, 32), train_steps=40, batch_size=16, ddim_steps=10,
                           learning_rate=1e-3), **overrides)

    @classmethod
    def small(cls, **overrides: Any) -> "DiffusionConfig":
        """About half a minute on the bundled sample: the quick model at 32 px, trained 120 steps (notebook 02's
        default and the quick profile's; blurred blobs, enough to exercise the chapter end to end)."""
        return cls.quick(**{"train_steps": 120, **overrides})

    @classmethod
    def quick(cls, **overrides: Any) -> "DiffusionConfig":
        """A minute or two on a CPU: recognisable slices at 32 px, trained for SDEdit only."""
        return replace(cls(image_size=32, channels=(16, 32, 32), train_steps=300, learning_rate=1e-3,
                           train_max_strength=0.6), **overrides)

    @classmethod
    def gpu(cls, **overrides: Any) -> "DiffusionConfig":
        """The real size on a GPU: 128 px, attention at the lowest level, EMA weights."""
        return replace(cls(image_size=128, channels=(64, 128, 128, 256), layers_per_block=2, attention=True,
                           train_steps=20_000, batch_size=64, ema_decay=0.999, ddim_steps=50), **overrides)


class DiffusionGenerator:
    """A class-conditional DDPM/DDIM model on the study's slices; variations by SDEdit.

    Args:
        config: Model and sampling settings; see :class:`DiffusionConfig` and its presets.
        device: Where to train and sample; default CUDA when available, else the CPU.
        cpu_threads: Torch CPU threads while training and sampling (None keeps torch's setting). On a CPU shared
            with other jobs fewer threads can be much faster: OpenMP threads spin while a sibling waits for its
            core (measured: ``benchmarks/README.md``). Not part of the fingerprint (results are the same).
    """

    name = "diffusion"
    variants_per_call = 16
    training_version = 1  # bump when training changes: cached weights of older code are then trained again

    def __init__(self, config: DiffusionConfig | None = None, *, device: str | torch.device | None = None,
                 cpu_threads: int | None = None) -> None:
        self.config = config or DiffusionConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cpu_threads = cpu_threads
        self.unet: UNet2DModel | None = None
        self.train_key: str | None = None  # hash of the training ids: part of the fingerprint
        self.train_seed: int | None = None
        self.n_train = 0
        self.losses: list[float] = []
        self.seconds: dict[str, float] = {}  # wall and CPU time of training (the sampler's is the bank's)
        self.provenance: dict[str, Any] = {}  # device, torch version and commit it was trained with

    @property
    def sources_per_call(self) -> int:
        return self.config.batch_size

    def _build(self, seed: int) -> UNet2DModel:
        c = self.config
        levels = len(c.channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if c.attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        torch.manual_seed(seed)  # weight init is the only global-RNG use
        return UNet2DModel(sample_size=c.image_size, in_channels=1, out_channels=1, block_out_channels=c.channels,
                           layers_per_block=c.layers_per_block, down_block_types=tuple(down),
                           up_block_types=tuple(up), norm_num_groups=8, num_class_embeds=NUM_CLASSES,
                           add_attention=c.attention).to(self.device)

    def _require_trained(self) -> UNet2DModel:
        if self.unet is None:
            raise RuntimeError("this DiffusionGenerator is not trained; call .train(images, labels, ids) or "
                               "DiffusionGenerator.load(path) first")
        return self.unet

    def train(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], *, seed: int = 0,
              progress: bool = True) -> "DiffusionGenerator":
        """Train from scratch on exactly these real images (a trial's real subset, never its held-out data).

        Args:
            images: ``uint8[N, 1, 128, 128]`` real slices.
            labels: ``int64[N]`` their classes.
            ids: Their ids; a hash of them keys the fingerprint.
            seed: Seeds weight init, batch order, flips, noise levels and noise.
            progress: Show a progress bar with the loss.

        Returns:
            ``self``, trained.
        """
        check_sources(images, labels, ids)
        start = clocks()
        with self._threads():
            self._train(images, labels, seed, progress)
        wall, cpu = clocks()
        self.seconds |= {"training": wall - start[0], "training_cpu": cpu - start[1]}
        self.train_key, self.train_seed, self.n_train = ids_key(ids), seed, len(ids)
        self.provenance = provenance(self.device)
        return self

    def _threads(self):
        return cpu_threads(self.cpu_threads if self.device.type == "cpu" else None)

    def _train(self, images: torch.Tensor, labels: torch.Tensor, seed: int, progress: bool) -> None:
        c = self.config
        unet = self._build(seed)
        scheduler = DDPMScheduler(num_train_timesteps=c.timesteps, beta_schedule=c.beta_schedule)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=c.learning_rate)
        ema = None
        if c.ema_decay:
            from diffusers.training_utils import EMAModel

            ema = EMAModel(unet.parameters(), decay=c.ema_decay, use_ema_warmup=True)
        x0_all = to_model(images, c.image_size, self.device)
        y_all = labels.to(self.device)
        gen = torch.Generator().manual_seed(seed)
        t_max = max(1, math.ceil(c.train_max_strength * c.timesteps))
        self.losses = []
        unet.train()
        bar = tqdm(range(c.train_steps), desc="train diffusion", disable=not progress)
        for _ in bar:
            idx = torch.randint(len(x0_all), (c.batch_size,), generator=gen)
            x0 = x0_all[idx.to(self.device)]
            if c.hflip:
                flip = (torch.rand(c.batch_size, generator=gen) < 0.5).to(self.device)
                x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
            self._denoising_step(unet, scheduler, optimizer, ema, x0, y_all[idx.to(self.device)], t_max, gen)
            bar.set_postfix(loss=f"{self.losses[-1]:.4f}", refresh=False)
        if ema is not None:
            ema.copy_to(unet.parameters())
        self.unet = unet.eval()

    def _autocast(self):
        """The precision the UNet runs in while training (full precision here; the latent generator's bf16)."""
        return nullcontext()

    def _denoising_step(self, unet: UNet2DModel, scheduler: DDPMScheduler, optimizer: torch.optim.Optimizer, ema: Any,
                        x0: torch.Tensor, labels: torch.Tensor, t_max: int, gen: torch.Generator) -> None:
        """One DDPM training step on clean inputs ``x0``: noise level and noise drawn from ``gen``, in that order."""
        t = torch.randint(t_max, (len(x0),), generator=gen).to(self.device)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        with self._autocast():
            pred = unet(scheduler.add_noise(x0, noise, t), t, class_labels=labels).sample
        loss = F.mse_loss(pred.float(), self._target(scheduler, x0, noise, t))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.step(unet.parameters())
        self.losses.append(loss.item())

    def _target(self, scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
                ) -> torch.Tensor:
        """What the UNet learns to predict from ``x0`` noised by ``noise`` to level ``t``: here the noise."""
        return noise

    def _ddim_options(self) -> dict[str, Any]:
        """Extra ``DDIMScheduler`` settings: none here (pixel space: the predicted image is clipped to [-1, 1])."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Name, model, settings and the key of the training data (what the fingerprint hashes)."""
        unet = self._require_trained()
        n_params = sum(p.numel() for p in unet.parameters())
        return {"name": self.name, "model": f"ddpm-unet-{n_params / 1e6:.2f}M-{self.config.image_size}px",
                "config": asdict(self.config), "train_ids_sha256": self.train_key, "train_seed": self.train_seed,
                "n_train": self.n_train}

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.name, self.describe())

    def estimate_cost_usd(self, n_images: int) -> float:
        return 0.0

    def _schedule(self, strength: float) -> tuple[Any, torch.Tensor]:
        """A fresh scheduler of the config's sampler and the timesteps SDEdit at ``strength`` runs through."""
        return sdedit_schedule(self.config, strength, **self._ddim_options())

    def _denoise(self, x: torch.Tensor, labels: torch.Tensor, strength: float) -> torch.Tensor:
        """Run DDIM from noise level ``strength`` down to a clean image; ``x`` is already noised to it."""
        unet = self._require_trained()
        scheduler, steps = self._schedule(strength)
        y = labels.to(self.device)
        with torch.inference_mode(), self._threads():
            for t in steps:
                eps = unet(x, t.to(self.device), class_labels=y).sample
                x = scheduler.step(eps, t, x).prev_sample  # DDIM's default eta=0: deterministic given the start
        return x

    def _vary_strength(self, images: torch.Tensor, seeds: Sequence[int], strength: float | None) -> float:
        """The SDEdit strength of a ``vary`` call (the config's by default), checked with its seeds."""
        strength = self.config.strength if strength is None else strength
        if not 0 < strength <= self.config.train_max_strength:
            raise ValueError(f"strength must be in (0, {self.config.train_max_strength}] (train_max_strength of "
                             f"this model), got {strength}")
        if len(seeds) != len(images):
            raise ValueError(f"pass one seed per image: {len(images)} images, {len(seeds)} seeds")
        return strength

    def vary(self, images: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int], *,
             strength: float | None = None) -> torch.Tensor:
        """SDEdit: noise each source to ``strength`` and denoise it under its label; one seed per image.

        Returns:
            ``uint8[N, 1, 128, 128]`` variations, identical for identical seeds (on the CPU).
        """
        strength = self._vary_strength(images, seeds, strength)
        size = self.config.image_size
        scheduler, steps = self._schedule(strength)
        x0 = to_model(images, size, self.device)
        noisy = scheduler.add_noise(x0, seeded_noise(seeds, (1, size, size)).to(self.device), steps[:1].repeat(len(x0)))
        return to_uint8(self._denoise(noisy, labels, strength))

    def sample(self, labels: torch.Tensor | Sequence[int], seed: int) -> torch.Tensor:
        """New slices of the given classes from pure noise: ``uint8[len(labels), 1, 128, 128]``."""
        if self.config.train_max_strength < 1:
            raise ValueError(f"this model learned noise levels up to {self.config.train_max_strength} only; "
                             "sampling from pure noise needs a model trained with train_max_strength=1.0")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        seeds = [variant_seed(seed, "sample", i) for i in range(len(labels))]
        size = self.config.image_size
        return to_uint8(self._denoise(seeded_noise(seeds, (1, size, size)).to(self.device), labels, 1.0))

    def generate(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], n_variants: int, seed: int,
                 *, first_variant: int = 0) -> list[SourceResult]:
        """SDEdit variations ``first_variant ..`` of each source; each image's seed comes from its (source, variant)."""
        check_sources(images, labels, ids)
        variants = range(first_variant, first_variant + n_variants)
        seeds = [variant_seed(seed, sid, v) for sid in ids for v in variants]
        out = self.vary(images.repeat_interleave(n_variants, 0), labels.repeat_interleave(n_variants, 0), seeds)
        model = self.describe()["model"]
        prompt = f"sdedit strength={self.config.strength} ddim_steps={self.config.ddim_steps}"
        return [SourceResult(source_id=sid, images=out[i * n_variants:(i + 1) * n_variants], model=model,
                             prompt=prompt, seeds=seeds[i * n_variants:(i + 1) * n_variants]) for i, sid in
                enumerate(ids)]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trained model to a folder (config, training key, loss curve, weights), atomically."""
        unet = self._require_trained()
        meta = {"config": asdict(self.config), "train_ids_sha256": self.train_key, "train_seed": self.train_seed,
                "n_train": self.n_train, "losses": self.losses, "seconds": self.seconds,
                "provenance": self.provenance}
        with atomic_folder(path) as tmp:
            unet.save_pretrained(tmp / "unet")
            (tmp / "generator.json").write_text(json.dumps(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device | None = None,
             cpu_threads: int | None = None) -> "DiffusionGenerator":
        """Read a model written by :meth:`save`."""
        path = Path(path)
        if not (path / "generator.json").exists():
            raise FileNotFoundError(f"{path} holds no saved DiffusionGenerator (no generator.json); train one and "
                                    "call .save(path)")
        meta = json.loads((path / "generator.json").read_text())
        self = cls(DiffusionConfig(**meta["config"]), device=device, cpu_threads=cpu_threads)
        # low_cpu_mem_usage=False: diffusers' fallback without accelerate (not a dependency), stated so it does not
        # advise installing accelerate on every load
        self.unet = UNet2DModel.from_pretrained(path / "unet", low_cpu_mem_usage=False).to(self.device).eval()
        self.train_key, self.train_seed, self.n_train = meta["train_ids_sha256"], meta["train_seed"], meta["n_train"]
        self.losses = meta["losses"]
        self.seconds, self.provenance = meta.get("seconds", {}), meta.get("provenance", {})
        return self

    @classmethod
    def cached(cls, config: DiffusionConfig, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], *,
               seed: int = 0, cache_root: str | os.PathLike | None = None, device: str | torch.device | None = None,
               cpu_threads: int | None = None, progress: bool = True) -> "DiffusionGenerator":
        """Load the model trained on exactly these ids with this config and seed, or train and save it.

        The cache lives in ``cache_root`` (default ``mri_synth.paths.cache_dir()/"diffusion"``), one folder per
        (training settings, training code version, training ids, seed), so a study trains one generator per real
        subset once and any sampling setting reuses it (``trained.load_or_train``). A cached model that cannot be read
        is trained again, with a warning naming its folder.
        """
        return load_or_train(cls, config, images, labels, ids, seed=seed, cache_root=cache_root, device=device,
                             cpu_threads=cpu_threads, progress=progress)
