"""Pieces shared by the generators trained locally (``diffusion`` in pixel space, ``latent`` in an autoencoder's).

- :func:`to_model` / :func:`to_uint8`: the study's ``uint8`` slices to a model's ``[-1, 1]`` range at its size and
  back to ``uint8[N, 1, 128, 128]``;
- :func:`seeded_noise`: one noise tensor per seed, drawn on the CPU so an image never depends on batching or device;
- :func:`cpu_threads`: torch's CPU thread count inside a block;
- :func:`cache_folder` and :func:`atomic_folder`: the on-disk cache of trained generators, keyed by
  (name, the settings that shape the weights, the training code's version, training ids, seed), and the atomic write
  of one saved generator; :func:`load_or_train` is the one way a generator class finds or trains its weights;
- :data:`SAMPLING_FIELDS`: the settings that only decide how a trained model is sampled (strength, sampler, steps,
  guidance). They key the bank of variations (the generator's fingerprint), never the weights, so trying another
  strength or sampler reuses the trained model; :func:`sdedit_schedule` is the sampler;
- :func:`provenance`: where and with what a generator was trained (device, torch, commit), saved beside it.

What a model is and how it trains stay in its own module.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from mri_synth import paths
from mri_synth.synth.base import IMAGE_SIZE, fingerprint_of, ids_key


def to_model(images: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """``uint8[N, 1, 128, 128]`` to float in ``[-1, 1]`` on ``device``, area-downsampled to ``size``."""
    x = images.to(device=device, dtype=torch.float32) / 127.5 - 1.0
    return F.interpolate(x, size=(size, size), mode="area") if size != IMAGE_SIZE else x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """A model's ``[-1, 1]`` images (any size) to ``uint8[N, 1, 128, 128]`` on the CPU (bilinear upsampling)."""
    x = x.float()
    if x.shape[-1] != IMAGE_SIZE:
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def seeded_noise(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """One standard-normal tensor of ``shape`` per seed: ``[len(seeds), *shape]``, drawn on the CPU."""
    return torch.stack([torch.randn(*shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` CPU threads inside the block (None keeps torch's setting), then restore torch's setting."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


SAMPLING_FIELDS = ("strength", "sampler", "ddim_steps", "guidance_scale", "channels_last", "sample_batch")
"""Config fields that decide how a trained model is sampled, not its weights: the bank's key, never the cache's."""

SAMPLERS = ("ddim", "dpm++", "unipc")
"""SDEdit samplers: DDIM (the recorded presets'), and diffusers' multistep DPM-Solver++ and UniPC, which reach the same
images in fewer model evaluations."""


def training_settings(config: Any) -> dict[str, Any]:
    """The config's fields that shape the weights (all but :data:`SAMPLING_FIELDS`)."""
    return {k: v for k, v in asdict(config).items() if k not in SAMPLING_FIELDS}


def cache_folder(name: str, config: dict[str, Any], ids: Sequence[str], seed: int,
                 cache_root: str | os.PathLike | None) -> Path:
    """Where the generator ``name`` trained with ``config`` on exactly ``ids`` with ``seed`` is (or will be) saved.

    Args:
        config: What shapes the weights: :func:`training_settings` and the training code's version.
        cache_root: The cache's folder; None means ``mri_synth.paths.cache_dir() / name``.
    """
    key = fingerprint_of(name, {"config": config, "train_ids_sha256": ids_key(ids), "seed": seed})
    root = Path(cache_root) if cache_root is not None else paths.cache_dir() / name
    return root / key


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder to write into; on success it replaces ``path`` in one rename.

    A process killed mid-write leaves a hidden ``.*.tmp`` folder, never a half-written ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def check_sdedit_settings(config: Any) -> None:
    """The checks both generators' configs share: SDEdit strengths in (0, 1], the strength within what the model
    learned, an EMA decay in [0, 1), and a known sampler."""
    if getattr(config, "sampler", "ddim") not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {config.sampler!r}")
    for name in ("strength", "train_max_strength"):
        if not 0 < getattr(config, name) <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {getattr(config, name)}")
    if config.strength > config.train_max_strength:
        raise ValueError(f"strength {config.strength} exceeds train_max_strength {config.train_max_strength}: "
                         "the model would denoise from noise levels it never learned; raise train_max_strength")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")


def pick_preset(config_class: type, presets: Sequence[str], what: str, name: str, overrides: dict[str, Any]) -> Any:
    """``config_class.<name>(**overrides)``, or an error naming ``what`` and its presets (or the unknown setting:
    the pixel presets' ``image_size`` is no latent preset's)."""
    if name not in presets:
        raise ValueError(f"{what} preset must be one of {tuple(presets)}, got {name!r}")
    if unknown := sorted(set(overrides) - set(config_class.__dataclass_fields__)):
        raise ValueError(f"the {what} preset {name!r} has no setting {', '.join(unknown)}; its settings: "
                         f"{', '.join(config_class.__dataclass_fields__)}")
    return getattr(config_class, name.replace("-", "_"))(**overrides)  # "cpu-fast" is the method cpu_fast


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a generator is trained: device, torch version, the code's commit and whether its tree was
    clean (the commit is ``""`` outside a git checkout)."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": f"{device.type}: {name}", "torch": torch.__version__, "commit": git("rev-parse", "HEAD"),
            "clean": git("status", "--porcelain", "--untracked-files=no") == "", "trained_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def clocks() -> tuple[float, float]:
    """Wall and process CPU seconds: on a shared CPU the CPU time of a 1-thread run is its idle-machine time."""
    return time.perf_counter(), time.process_time()


def load_or_train(cls: Any, config: Any, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], *,
                  seed: int, cache_root: str | os.PathLike | None, device: str | torch.device | None,
                  cpu_threads: int | None, progress: bool) -> Any:
    """The generator ``cls`` trained with ``config``'s training settings on exactly ``ids`` with ``seed``: loaded from
    the cache when trained before (whatever its sampling settings were), else trained and saved; either way it samples
    with ``config``'s sampling settings. A cached generator that cannot be read is trained again, with a warning naming
    its folder."""
    folder = cache_folder(cls.name, {**training_settings(config), "training_version": cls.training_version}, ids,
                          seed, cache_root)
    if (folder / "generator.json").exists():
        try:
            generator = cls.load(folder, device=device, cpu_threads=cpu_threads)
        except Exception as err:  # a truncated weights file, a damaged generator.json: train it again
            warnings.warn(f"the cached {cls.name} generator {folder} cannot be read ({type(err).__name__}); training "
                          "it again", stacklevel=3)
        else:
            generator.config = replace(generator.config, **{k: getattr(config, k) for k in SAMPLING_FIELDS
                                                             if hasattr(config, k)})
            generator.from_cache = True
            return generator
    generator = cls(config, device=device, cpu_threads=cpu_threads)
    generator.train(images, labels, ids, seed=seed, progress=progress)
    generator.save(folder)
    generator.from_cache = False  # trained in this call (what the generators command reports)
    return generator


def sdedit_schedule(config: Any, strength: float, **options: Any) -> tuple[Any, torch.Tensor]:
    """A fresh scheduler of ``config.sampler`` (schedulers are stateful) and the timesteps SDEdit at ``strength`` runs
    through: the last ``round(ddim_steps * strength)`` of ``ddim_steps`` spaced over the training schedule.

    ``options`` go to the scheduler (``prediction_type``; DDIM's ``clip_sample``)."""
    # imported here: the core (the study, the CLI) must import without diffusers, which the GPU machines lack
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = dict(num_train_timesteps=config.timesteps, beta_schedule=config.beta_schedule)
    sampler = getattr(config, "sampler", "ddim")
    if sampler == "ddim":
        scheduler = DDIMScheduler(**common, **options)
    else:
        options = {k: v for k, v in options.items() if k != "clip_sample"}  # the multistep solvers never clip
        if sampler == "dpm++":
            scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2, **options)
        else:
            scheduler = UniPCMultistepScheduler(**common, solver_order=2, **options)
    n = config.ddim_steps
    scheduler.set_timesteps(n)
    start = n - max(1, round(n * strength))
    if sampler != "ddim":
        scheduler.set_begin_index(start)  # the multistep solvers count their steps from here
    return scheduler, scheduler.timesteps[start:]
