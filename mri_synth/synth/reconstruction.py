"""The subset's autoencoder as a generator: a diagnostic that separates blur from new content (issue 23).

A latent diffusion generator's variations can be no sharper than its autoencoder's reconstructions. Sending real
images through the autoencoder of the trial's subset (encode to the posterior mean, decode) gives images with the
generator's blur and nothing else of it. Two arms of the study use it, as measurements, not augmentation methods:

- ``reconstruct_own``: the trial's own real subset, reconstructed (the blur, no new content; beside ``repeat``,
  which has neither);
- ``reconstruct_other``: the rest of the evaluation's training pool, the images the trial pretends not to have,
  reconstructed by the same autoencoder (new content through the decoder; beside ``100% real``, which has the content
  without the blur). This arm breaks the study's rule that a trial's synthetic images come from its own subset on
  purpose: the autoencoder still learned from the subset only, but the content is the other images'. In the
  ``slice`` evaluation that content includes the test people's neighbouring slices, as the 100% arm's does: read
  novelty from the ``subject`` evaluation. A class whose every training person is in the subset (in ``subject``
  mode Moderate Demented has 2 people) has no other images: it gets its own reconstructions, so that every arm keeps
  the same class sizes (the trial's synthetic source ids say which).

A reconstruction is deterministic: every variant of one source is the same image (the bank holds them as any other
generator's). Which images an arm reconstructs is the registry entry's ``draws_from``; training or loading the
autoencoder is the latent generator's (``synth.latent``), cached with its UNet and shared with the diffusion arm.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mri_synth.synth.base import SourceResult, check_sources, fingerprint_of
from mri_synth.synth.trained import training_settings


class ReconstructionGenerator:
    """Each "variation" of a source is its reconstruction by a trained latent generator's autoencoder.

    Args:
        latent: A trained ``LatentDiffusionGenerator`` (its autoencoder is used; its UNet is not).
    """

    name = "reconstruction"
    variants_per_call = 64

    def __init__(self, latent: Any) -> None:
        if getattr(latent, "autoencoder", None) is None:
            raise ValueError("a reconstruction needs a latent diffusion generator with a trained autoencoder: use a "
                             "latent-* diffusion preset (registry.diffusion_presets()); pixel presets have none")
        self.latent = latent

    @property
    def sources_per_call(self) -> int:
        return 64

    def describe(self) -> dict[str, Any]:
        """What decides the images: the latent generator's training settings, training images and seed (not its
        sampling settings, which its reconstructions do not use: every sampler of one subset shares them)."""
        inner = self.latent.describe()
        return {"name": self.name, "model": f"autoencoder of {inner['model']}",
                "training": training_settings(self.latent.config), "train_ids_sha256": inner["train_ids_sha256"],
                "train_seed": inner["train_seed"], "n_train": inner["n_train"]}

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.name, self.describe())

    def estimate_cost_usd(self, n_images: int) -> float:
        return 0.0

    def generate(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], n_variants: int, seed: int,
                 *, first_variant: int = 0) -> list[SourceResult]:
        """The reconstruction of each source, ``n_variants`` times (it is the same image each time)."""
        check_sources(images, labels, ids)
        out = self.latent.reconstruct(images)
        model = self.describe()["model"]
        return [SourceResult(source_id=sid, images=out[i:i + 1].repeat(n_variants, 1, 1, 1), model=model,
                             prompt="encode (posterior mean) and decode")
                for i, sid in enumerate(ids)]
