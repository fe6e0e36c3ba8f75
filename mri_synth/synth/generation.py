"""Notebook 02's steps as functions: pick a stratified real sample, make variations of it, check their fidelity.

- :class:`GenerationConfig`: the notebook's parameters, checked, with messages that say what to change.
- :func:`fill_bank`: the real sample, a generator for it (the diffusion model is trained on that sample only),
  and the bank filled with ``n_variants`` variations of each of its images.
- :func:`openai_preview`: the OpenAI generator on the same sample: the real thing when ``OPENAI_API_KEY`` is set,
  otherwise a dry run that prints the number of calls and the estimated cost.
- :func:`classifier_check`: how a classifier trained on real images labels the synthetic ones.
- :func:`cost_so_far`: what the bank has spent, per generator.

Generators and the bank are in their own modules; the figures in :mod:`mri_synth.synth.figures`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from mri_synth import paths
from mri_synth.data import MRIData, Split, check_fraction, stratified_sample
from mri_synth.synth.bank import FillSummary, SyntheticBank
from mri_synth.synth.base import Generator
from mri_synth.synth.diffusion import PRESETS as DIFFUSION_PRESETS, DiffusionConfig, DiffusionGenerator
from mri_synth.synth.openai_gen import DEFAULT_MODEL, OpenAIGenerator

GENERATORS = ("diffusion", "openai")


@dataclass(frozen=True)
class GenerationConfig:
    """What notebook 02 makes; ``0`` / ``""`` values mean "the preset's or the project's default"."""

    data_source: str = "sample"
    seed: int = 0
    generator: str = "diffusion"
    real_fraction: float = 0.3
    n_variants: int = 3
    diffusion_preset: str = "toy"
    diffusion_image_size: int = 0
    diffusion_train_steps: int = 0
    diffusion_strength: float = 0.0
    cpu_threads: int = 0
    openai_model: str = DEFAULT_MODEL
    openai_quality: str = "low"
    budget_usd: float = 1.0
    bank_dir: str = ""
    figures_dir: str = ""
    results_dir: str = ""

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {self.generator!r}")
        if self.diffusion_preset not in DIFFUSION_PRESETS:
            raise ValueError(f"diffusion_preset must be one of {DIFFUSION_PRESETS}, got {self.diffusion_preset!r}")
        check_fraction(self.real_fraction, "real_fraction")
        if not 1 <= self.n_variants <= 100:
            raise ValueError(f"n_variants must be between 1 and 100, got {self.n_variants}")
        if self.budget_usd < 0 or self.cpu_threads < 0:
            raise ValueError("budget_usd and cpu_threads must be >= 0")
        self.diffusion_config()  # fail now, not after the data are loaded

    def diffusion_config(self) -> DiffusionConfig:
        """The preset with the notebook's overrides."""
        overrides = {k: v for k, v in (("image_size", self.diffusion_image_size),
                                       ("train_steps", self.diffusion_train_steps),
                                       ("strength", self.diffusion_strength)) if v}
        return DiffusionConfig.preset(self.diffusion_preset, **overrides)

    def bank(self) -> SyntheticBank:
        return SyntheticBank(self.bank_dir or None)

    def figures_path(self) -> Path:
        return paths.chosen_dir(self.figures_dir, paths.figures_dir)

    def results_path(self) -> Path:
        return paths.chosen_dir(self.results_dir, paths.results_dir)


@dataclass
class GenerationRun:
    """The real sample, the generator that made variations of it, the bank holding them, and the fill summary."""

    sources: Split
    generator: Generator
    bank: SyntheticBank
    summary: FillSummary

    def synthetic(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[str, ...]]:
        """Every variation of the sample this generator holds in the bank (``bank.sample`` of all of them)."""
        held = self.bank.available(self.sources.ids, self.generator.fingerprint)
        return self.bank.sample(self.sources.ids, sum(map(len, held.values())), seed,
                                generator_fingerprint=self.generator.fingerprint)


def real_sample(data: MRIData, config: GenerationConfig) -> Split:
    """The stratified ``real_fraction`` sample of the training split whose images get variations."""
    return data.train.subset(stratified_sample(data.train.labels, config.real_fraction, seed=config.seed))


def fill_bank(data: MRIData, config: GenerationConfig, *, progress: bool = True) -> GenerationRun:
    """Make ``n_variants`` variations of every image of the real sample with the configured generator.

    The diffusion generator is trained on the sample only (and cached by it); the OpenAI one spends at most
    ``budget_usd`` in total and needs ``OPENAI_API_KEY``.
    """
    sources = real_sample(data, config)
    if config.generator == "diffusion":
        generator: Generator = DiffusionGenerator.cached(
            config.diffusion_config(), sources.images, sources.labels, sources.ids, seed=config.seed,
            cpu_threads=config.cpu_threads or None, progress=progress)
    else:
        generator = OpenAIGenerator(config.openai_model, quality=config.openai_quality)
    bank = config.bank()
    summary = bank.fill(generator, sources.images, sources.labels, sources.ids, config.n_variants,
                        seed=config.seed, budget_usd=config.budget_usd, progress=progress)
    return GenerationRun(sources, generator, bank, summary)


def openai_preview(data: MRIData, config: GenerationConfig, *, progress: bool = True) -> FillSummary:
    """OpenAI variations of the same sample when ``OPENAI_API_KEY`` is set; otherwise only a priced dry run."""
    sources = real_sample(data, config)
    generator = OpenAIGenerator(config.openai_model, quality=config.openai_quality)
    return config.bank().fill(generator, sources.images, sources.labels, sources.ids, config.n_variants,
                              seed=config.seed, budget_usd=config.budget_usd, progress=progress,
                              dry_run=not os.environ.get("OPENAI_API_KEY"))


def classifier_check(data: MRIData, synthetic_images: torch.Tensor, *, model: str = "cnn", epochs: int = 3,
                     seed: int = 0) -> torch.Tensor:
    """Train ``model`` on the real training split and return its class probabilities of the synthetic images."""
    from mri_synth.train import TrainConfig, fit, predict_proba

    result = fit(model, data.train.images, data.train.labels, data.test.images, data.test.labels,
                 TrainConfig(epochs=epochs, seed=seed, progress=False))
    return predict_proba(result.model, synthetic_images, result.spec)


def cost_so_far(bank: SyntheticBank) -> pd.DataFrame:
    """Per generator: images made, refused or interrupted, and the estimated spend in USD."""
    m = bank.manifest()
    if m.empty:
        return pd.DataFrame(columns=["generator", "fingerprint", "ok", "cost_usd"])
    counts = m.pivot_table(index=["generator", "fingerprint"], columns="status", values="variant", aggfunc="count",
                           fill_value=0)
    return counts.join(m.groupby(["generator", "fingerprint"])["cost_usd"].sum()).reset_index()


def save_table(table: pd.DataFrame, name: str, config: GenerationConfig) -> Path:
    """Write ``table`` as ``<results_dir>/<name>.csv`` (the folder is made if missing) and return the path."""
    path = config.results_path() / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path
