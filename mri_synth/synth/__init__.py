"""Synthetic images for the study: generators behind one protocol, and the on-disk bank that keeps what they made.

    OpenAIGenerator      variations from OpenAI's images API (edit with a GPT image model; legacy variations)
    DiffusionGenerator   a class-conditional diffusion model trained locally; variations by SDEdit
    LatentDiffusionGenerator  the same in a small autoencoder's latent space: sharp 128 px slices on a CPU budget
    FolderGenerator      images someone already made, one sub-folder per class
    SyntheticBank        fill once (resumable, budgeted, never pays twice); sample per trial

The diffusion generators are imported on first use, so that ``import mri_synth.synth`` stays light.
"""

from __future__ import annotations

from typing import Any

from mri_synth.synth.bank import FillSummary, SyntheticBank
from mri_synth.synth.base import GenerationError, Generator, SourceResult, fingerprint_of, ids_key, variant_seed
from mri_synth.synth.folder import FolderGenerator  # noqa: E402
from mri_synth.synth.openai_gen import OpenAIGenerator

__all__ = [
    "DiffusionConfig", "DiffusionGenerator", "FillSummary", "LatentDiffusionConfig", "LatentDiffusionGenerator",
    "FolderGenerator", "GenerationError", "Generator", "OpenAIGenerator", "SourceResult", "SyntheticBank",
    "fingerprint_of", "ids_key", "variant_seed",
]


def __getattr__(name: str) -> Any:
    if name in ("DiffusionConfig", "DiffusionGenerator"):
        from mri_synth.synth import diffusion  # lazy: diffusers is slow to import

        return getattr(diffusion, name)
    if name in ("LatentDiffusionConfig", "LatentDiffusionGenerator"):
        from mri_synth.synth import latent  # lazy: diffusers is slow to import

        return getattr(latent, name)
    raise AttributeError(f"module 'mri_synth.synth' has no attribute {name!r}")
