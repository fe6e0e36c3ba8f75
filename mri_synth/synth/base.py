"""The generator protocol every synthetic-image source follows, and the small pieces they share.

A *generator* turns real source images (``uint8[N, 1, 128, 128]`` with their labels and ids) into variations of
the same size and dtype. It does not store anything: the :class:`~mri_synth.synth.bank.SyntheticBank` drives it
one *call* at a time, records what each call made or cost, and keeps the images. This module holds

- :class:`Generator`, the protocol the bank relies on;
- :class:`SourceResult`, what a generator returns for one source image;
- :func:`fingerprint_of`, the stable key of a generator (name, model, settings; never a key or secret);
- :func:`variant_seed`, a per-(seed, source, variant) seed so an image never depends on how work was chunked;
- PNG and resizing helpers shared by the OpenAI and folder generators;
- :class:`FillSummary`, what one bank fill did.

What each generator does with the images (an API, a local diffusion model, files on disk) is left to its module.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from PIL import Image

from mri_synth.data.types import IMAGE_SIZE

STATUSES = ("ok", "refused", "error", "missing")
"""What a generator may report for one source: made images, declined (content policy or another 4xx), failed
in a way that may succeed later, or (folder generator) has no image of that source."""


class GenerationError(RuntimeError):
    """A generator cannot go on (bad key, unreachable server after its retries, missing model).

    The bank records the call as failed (nothing was paid), keeps everything made so far, and re-raises: running
    ``fill`` again resumes.
    """


@dataclass
class SourceResult:
    """What one generator call made from one source image.

    Attributes:
        source_id: The id of the real image the variations are of.
        images: ``uint8[m, 1, 128, 128]``; ``m`` may be smaller than asked for when the generator refused or lacks
            images (``m == 0`` is allowed).
        status: One of :data:`STATUSES`.
        cost_usd: Estimated cost of the call for this source (0 for local generators and refusals).
        seconds: Wall time spent on this source.
        detail: A short human-readable note (the refusal message, the error); never a secret.
        prompt: The prompt sent, if any (recorded in the manifest).
        model: The model that made the images.
        seeds: One seed per returned image (the variant seed used), or empty when the generator has none.
    """

    source_id: str
    images: torch.Tensor
    status: str = "ok"
    cost_usd: float = 0.0
    seconds: float = 0.0
    detail: str = ""
    prompt: str | None = None
    model: str = ""
    seeds: Sequence[int] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        check_images(self.images, "SourceResult.images")


@runtime_checkable
class Generator(Protocol):
    """What the bank needs from a generator.

    Attributes:
        name: Short name ("openai", "diffusion", "folder").
        sources_per_call: How many source images one :meth:`generate` call may take (1 for a paid API, so that a
            kill never loses a paid result; a batch for a local model).
        variants_per_call: The most variants of one source one call may produce.
    """

    name: str
    sources_per_call: int
    variants_per_call: int

    @property
    def fingerprint(self) -> str:
        """Stable key of name, model and settings (and training data, for a trained generator)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able name, model and settings, for the bank's records. Never holds a secret."""
        ...

    def estimate_cost_usd(self, n_images: int) -> float:
        """Estimated cost of producing ``n_images`` in one call (0 for a local generator)."""
        ...

    def generate(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        ids: Sequence[str],
        n_variants: int,
        seed: int,
        *,
        first_variant: int = 0,
    ) -> list[SourceResult]:
        """Make variants ``first_variant .. first_variant + n_variants - 1`` of each source, one result each."""
        ...


def fingerprint_of(name: str, settings: dict[str, Any]) -> str:
    """A stable, readable key for a generator: ``"<name>-<12 hex digits of the settings' hash>"``.

    Args:
        name: The generator's name.
        settings: JSON-able settings; keys are sorted so the order they were given in does not matter.
    """
    blob = json.dumps({"name": name, **settings}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def ids_key(ids: Sequence[str]) -> str:
    """Order-free hash of a set of image ids: the key of the data a generator was trained on."""
    blob = "\n".join(sorted(ids))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def variant_seed(seed: int, source_id: str, variant: int) -> int:
    """A 63-bit seed for one variant of one source, independent of batching and resume order."""
    digest = hashlib.sha256(f"{seed}|{source_id}|{variant}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Check the study's image layout (``uint8[N, 1, 128, 128]``) and say how to fix a mismatch."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor uint8[N, 1, 128, 128], got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{what} must be uint8[N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}], got {images.dtype} {tuple(images.shape)}; "
            "pass a Split's .images (mri_synth.data.cache.load_data) or convert with (x * 255).round().to(torch.uint8)"
        )
    return images


def check_sources(images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str]) -> None:
    """Check that images, labels and ids describe the same sources, once each."""
    check_images(images, "source images")
    if labels.ndim != 1 or len(labels) != len(images) or len(ids) != len(images):
        raise ValueError(
            f"got {len(images)} images, {len(labels)} labels and {len(ids)} ids; pass one label and one id per "
            "image (a Split's .images, .labels and .ids)"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("source ids must be unique; pass each source image once")


def to_png(image: torch.Tensor, size: int = IMAGE_SIZE) -> bytes:
    """Encode one ``uint8[1, H, W]`` image as a square grayscale PNG of ``size`` pixels a side."""
    pil = Image.fromarray(image.squeeze(0).numpy())  # a 2-D uint8 array is mode "L"
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def from_image_bytes(data: bytes) -> torch.Tensor:
    """Decode any image (PNG, JPEG, WebP; colour or not) to grayscale ``uint8[1, 128, 128]``.

    Colour results are converted with PIL's luma transform; other sizes are resampled (area-averaging down,
    Lanczos up) because generators answer at 1024 px while the study uses 128 px.
    """
    with Image.open(io.BytesIO(data)) as pil:
        pil = pil.convert("L")
        if pil.size != (IMAGE_SIZE, IMAGE_SIZE):
            down = pil.size[0] > IMAGE_SIZE
            pil = pil.resize(
                (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX if down else Image.Resampling.LANCZOS
            )
        return torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).unsqueeze(0)


@dataclass(frozen=True)
class FillSummary:
    """What one :meth:`SyntheticBank.fill` did (or, in a dry run, would do)."""

    fingerprint: str
    requested: int  # images asked for: sources x n_variants
    already_done: int  # of those, settled before this run (made, refused, or interrupted and not retried)
    pending: int  # images this run set out to make
    calls_planned: int
    estimated_cost_usd: float  # of the pending calls
    made: int = 0
    refused: int = 0
    calls_sent: int = 0
    cost_usd: float = 0.0  # estimated spend of this run
    total_cost_usd: float = 0.0  # estimated spend of this generator in this bank, all runs
    interrupted: int = 0  # images of calls killed mid-flight (possibly paid), found at the start of this run
    stopped_by_budget: bool = False
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        calls = self.calls_planned if self.dry_run else self.calls_sent
        text = (
            f"{self.fingerprint}: {self.requested} images requested, {self.already_done} already in the bank; "
            f"{verb} {calls} calls for {self.pending} images, estimated ${self.estimated_cost_usd:.4f}"
        )
        if not self.dry_run:
            text += f"; made {self.made}, refused {self.refused}, spent ~${self.cost_usd:.4f} " \
                    f"(~${self.total_cost_usd:.4f} in total for this generator)"
        if self.interrupted:
            text += f"; {self.interrupted} images of interrupted calls (possibly paid) left as they were"
        if self.stopped_by_budget:
            text += "; STOPPED before exceeding the budget (raise budget_usd to go on)"
        return text
