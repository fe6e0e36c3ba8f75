"""Notebook 02's steps as functions: pick a stratified real sample, make variations of it, check their fidelity.

- :class:`GenerationConfig`: the notebook's parameters, checked, with messages that say what to change.
- :func:`fill_bank`: the real sample, its generator from the registry (a learned one is trained on that sample
  only), and the bank filled with ``n_variants`` variations of each of its images (a paid one within its budget).
- :func:`openai_preview`: the OpenAI generator on the same sample: the real thing when ``OPENAI_API_KEY`` is set,
  otherwise a dry run that prints the number of calls and the estimated cost.
- :func:`cost_so_far`: what the bank has spent, per generator.

The classifier that labels synthetic slices is :func:`mri_synth.training.classifier.real_classifier` (shared with
notebook 03). Generators are :mod:`mri_synth.synth.registry`'s; the figures in
:mod:`mri_synth.analysis.synthetic_figures`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from mri_synth import paths
from mri_synth.analysis import fidelity, memorisation
from mri_synth.analysis import synthetic_figures as figures
from mri_synth.analysis.plots import save_figure, show_figure
from mri_synth.config import NotebookConfig
from mri_synth.data.cache import load_data
from mri_synth.data.sampling import stratified_sample
from mri_synth.data.types import MRIData, Split, check_fraction
from mri_synth.synth import registry
from mri_synth.synth.bank import FillSummary, SyntheticBank
from mri_synth.synth.base import Generator
from mri_synth.training.classifier import ClassifierRecipe, real_classifier
from mri_synth.training.evaluation import predict_proba


@dataclass(frozen=True)
class GenerationConfig(NotebookConfig):
    """What notebook 02 makes; ``0`` / ``""`` values mean "the preset's or the project's default"."""

    generator: str = "diffusion"  # a registered generator (registry.names())
    real_fraction: float = 0.3  # share of the real training slices that get variations
    n_variants: int = 3  # variations per real slice
    diffusion_preset: str = registry.DEFAULT_DIFFUSION_PRESET
    diffusion_strength: float = 0.0  # SDEdit strength over the preset's; 0 keeps the preset's
    openai_model: str = ""  # empty: the OpenAI generator's default model
    openai_quality: str = "low"
    synthetic_folder: str = ""  # the folder generator's images
    budget_usd: float = 1.0  # the most a paid generator may spend in this bank, all runs together
    bank_dir: str = ""  # empty: <cache>/bank
    classifier: str = "cnn"  # the model that labels the synthetic slices (trained on the real ones)
    classifier_epochs: int = 3
    pairs_per_class: int = 2  # real slices per class in the pairs figure

    def __post_init__(self) -> None:
        super().__post_init__()
        registry.get(self.generator)  # names the registered generators
        check_fraction(self.real_fraction, "real_fraction")
        if not 1 <= self.n_variants <= 100:
            raise ValueError(f"n_variants must be between 1 and 100, got {self.n_variants}")
        if self.budget_usd < 0:
            raise ValueError("budget_usd must be >= 0")
        registry.get(self.generator).label(self.generator_settings())  # fail now, not after the data are loaded

    def generator_settings(self) -> registry.GeneratorSettings:
        """The registry's settings these parameters name (the preset with the notebook's overrides)."""
        overrides = (("strength", self.diffusion_strength),) if self.diffusion_strength else ()
        return registry.settings_from({**{k: getattr(self, k) for k in self.parameter_names()},
                                       "diffusion_overrides": overrides})

    @property
    def recipe(self) -> ClassifierRecipe:
        """How the classifier that labels the synthetic slices is trained."""
        return ClassifierRecipe(model_name=self.classifier, epochs=self.classifier_epochs, seed=self.seed,
                                device=self.device)

    def bank(self) -> SyntheticBank:
        return SyntheticBank(self.bank_dir or None)


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

    A learned generator is trained on the sample only (and cached by it); a paid one spends at most
    ``budget_usd`` in total (OpenAI's needs ``OPENAI_API_KEY``).
    """
    sources = real_sample(data, config)
    settings = replace(config.generator_settings(), progress=progress)  # the generator's training shows its bar too
    generator = registry.build(config.generator, settings, sources, seed=config.seed)
    bank = config.bank()
    summary = bank.fill(generator, sources.images, sources.labels, sources.ids, config.n_variants,
                        seed=config.seed, budget_usd=config.budget_usd, progress=progress)
    return GenerationRun(sources, generator, bank, summary)


def openai_preview(data: MRIData, config: GenerationConfig, *, progress: bool = True) -> FillSummary:
    """OpenAI variations of the same sample when ``OPENAI_API_KEY`` is set; otherwise only a priced dry run."""
    sources = real_sample(data, config)
    generator = registry.build("openai", config.generator_settings())
    return config.bank().fill(generator, sources.images, sources.labels, sources.ids, config.n_variants,
                              seed=config.seed, budget_usd=config.budget_usd, progress=progress,
                              dry_run=not os.environ.get("OPENAI_API_KEY"))


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
    path = config.results / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


RECORDED_FIDELITY = "benchmarks/results/latent_fidelity_report.csv"
"""The latent presets' fidelity on two real 30% subsets, recorded by ``benchmarks/latent_fidelity.py``."""
RECORDED_STRENGTHS = "benchmarks/results/latent_fidelity_strengths.csv"
"""The same benchmark's SDEdit strengths tried on validation, with their FD and label fidelity."""


def recorded_fidelity() -> pd.DataFrame:
    """The recorded fidelity of each preset (``RECORDED_FIDELITY``): one row per metric, a column per preset and the
    real-vs-real floor."""
    recorded = pd.read_csv(paths.project_path(RECORDED_FIDELITY))
    return recorded.pivot_table(index="metric", columns="preset", values="value", sort=False).join(
        recorded.drop_duplicates("metric").set_index("metric")["floor"]).round(3)


def recorded_strengths() -> pd.DataFrame:
    """The SDEdit strengths the latent preset's strength was chosen from (``RECORDED_STRENGTHS``)."""
    return pd.read_csv(paths.project_path(RECORDED_STRENGTHS)).round(3)


__all__ = ["GenerationConfig", "cost_so_far", "fidelity", "figures", "fill_bank", "load_data", "memorisation",
           "openai_preview", "predict_proba", "real_classifier", "recorded_fidelity", "recorded_strengths",
           "save_figure", "show_figure", "save_table"]
