"""Pieces shared by the generators trained locally (``diffusion`` in pixel space, ``latent`` in an autoencoder's).

- :func:`to_model` / :func:`to_uint8`: the study's ``uint8`` slices to a model's ``[-1, 1]`` range at its size and
  back to ``uint8[N, 1, 128, 128]``;
- :func:`seeded_noise`: one noise tensor per seed, drawn on the CPU so an image never depends on batching or device;
- :func:`cpu_threads`: torch's CPU thread count inside a block;
- :func:`cache_folder` and :func:`atomic_folder`: the on-disk cache of trained generators, keyed by
  (name, settings, training ids, seed), and the atomic write of one saved generator.

What a model is and how it trains stay in its own module.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
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


def cache_folder(name: str, config: dict[str, Any], ids: Sequence[str], seed: int,
                 cache_root: str | os.PathLike | None) -> Path:
    """Where the generator ``name`` trained with ``config`` on exactly ``ids`` with ``seed`` is (or will be) saved.

    Args:
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
    learned, and an EMA decay in [0, 1)."""
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
    return getattr(config_class, name)(**overrides)
