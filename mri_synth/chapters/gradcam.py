"""Notebook 03's experiment: a classifier trained on real slices, variations of chosen sources, and their CAMs.

The steps of the thesis's chapter 3, each one call:

- :class:`GradCamConfig`: the notebook's parameters, checked on construction;
- :func:`trained_classifier`: the reference classifier of :mod:`mri_synth.training.classifier` (trained on the real
  training split once, cached) with this notebook's settings;
- :func:`choose_sources`: seeded source slices per class from the real training split;
- :func:`synthetic_variations`: their variations, through the generator registry's one path to the
  :class:`~mri_synth.synth.SyntheticBank` (the local diffusion generator, trained on the real training split, or
  a generator already in the bank, e.g. OpenAI variations made earlier);
- :func:`real_vs_synthetic_panels`: the Figures 3.1-3.4 panels (:func:`save_panels` writes them); the agreement
  table itself is :func:`mri_synth.training.gradcam.agreement_table`; :func:`save_agreement` writes it with its
  provenance; :func:`real_vs_synthetic_figure` and :func:`plot_agreement` draw the chapter's figures.

CAMs and agreement metrics are :mod:`mri_synth.training.gradcam`'s; training is
:mod:`mri_synth.training.classifier`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn

from mri_synth.analysis.plots import as_array, boxplot, new_figure, save_figure, show_figure
from mri_synth.config import NotebookConfig
from mri_synth.data.cache import load_data
from mri_synth.data.types import CLASS_NAMES, MRIData, Split
from mri_synth.synth import registry
from mri_synth.synth.bank import SyntheticBank
from mri_synth.training.classifier import ClassifierRecipe, real_classifier
from mri_synth.training.gradcam import (
    PAIR_KINDS,
    CamExplainer,
    agreement_table,
    cam_method,
    overlay_cam,
    resolve_class,
    summarize_agreement,
)
from mri_synth.training.models import ModelSpec, get_spec
from mri_synth.training.settings import TrainSettings


@dataclass(frozen=True)
class GradCamConfig(NotebookConfig, TrainSettings):
    """Settings of notebook 03 (see its parameters cell for why each default). The classifier's training settings
    (epochs, batch_size, input_size, ...) are ``TrainSettings``' fields."""

    model_name: str = "cnn"  # the thesis explained its basic CNN
    pretrained: bool = False
    cam_method: str = "gradcam"
    explained_class: str = "Moderate_Demented"
    panel_classes: str = "Moderate_Demented,Non_Demented"
    panel_sources_per_class: int = 2
    variations_per_source: int = 3
    agreement_sources_per_class: int = 6
    agreement_class: str = ""  # "": each pair explained for its source's own class
    top_fraction: float = 0.2
    diffusion_preset: str = registry.DEFAULT_DIFFUSION_PRESET
    bank_generator: str = ""  # a generator fingerprint in the bank: use its variations instead of diffusion
    bank_dir: str = ""

    def __post_init__(self) -> None:
        NotebookConfig.__post_init__(self)  # types, as every notebook's parameters
        TrainSettings.__post_init__(self)  # the settings' ranges
        for name in ("panel_sources_per_class", "variations_per_source", "agreement_sources_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        get_spec(self.model_name)  # raises with the list of known names
        cam_method(self.cam_method)
        for name in [self.explained_class, *self.classes, *([self.agreement_class] if self.agreement_class else [])]:
            resolve_class(name)
        if not 0 < self.top_fraction < 1:
            raise ValueError(f"top_fraction must be in (0, 1), e.g. 0.2; got {self.top_fraction}")
        if not self.bank_generator:
            self.generator_settings()  # an unknown preset fails now, naming the presets

    def generator_settings(self) -> registry.GeneratorSettings:
        """The diffusion generator's settings (when no bank generator is named)."""
        settings = registry.GeneratorSettings(diffusion_preset=self.diffusion_preset, device=self.device,
                                              cpu_threads=self.cpu_threads)
        registry.get("diffusion").label(settings)
        return settings

    @property
    def recipe(self) -> ClassifierRecipe:
        """How the classifier whose CAMs are shown is trained."""
        return ClassifierRecipe(model_name=self.model_name, pretrained=self.pretrained, seed=self.seed,
                                device=self.device, **asdict(self.training))

    @property
    def classes(self) -> list[str]:
        """The classes whose sources get a panel, in the order given."""
        return [c.strip() for c in self.panel_classes.split(",") if c.strip()]

    @property
    def spec(self) -> ModelSpec:
        spec = get_spec(self.model_name)
        return spec.with_input_size(self.input_size) if self.input_size else spec


def trained_classifier(config: GradCamConfig, data: MRIData, *, progress: bool = True
                       ) -> tuple[nn.Module, ModelSpec, pd.DataFrame]:
    """The reference classifier (:func:`mri_synth.training.classifier.real_classifier`) with this notebook's recipe.

    Returns:
        ``(model on the CPU in eval mode, its spec, its history table)``.
    """
    return real_classifier(data, config.recipe, progress=progress)


def choose_sources(split: Split, per_class: int, seed: int, classes: list[str] | None = None) -> torch.Tensor:
    """Up to ``per_class`` seeded slices of each class (all four by default): sorted int64 indices into ``split``."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for name in classes or list(CLASS_NAMES):
        members = torch.nonzero(split.labels == resolve_class(name)).flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.sort(torch.cat(picked)).values


@dataclass(frozen=True, eq=False)
class Variations:
    """Synthetic slices and the real slice each was made from."""

    images: torch.Tensor  # uint8 [M, 1, 128, 128]
    labels: torch.Tensor  # int64 [M], the source's class
    ids: tuple[str, ...]  # synthetic ids, "<fingerprint>/<source id>/v<variant>"
    source_ids: tuple[str, ...]
    generator_fingerprint: str

    def __len__(self) -> int:
        return len(self.labels)


def synthetic_variations(config: GradCamConfig, data: MRIData, sources: torch.Tensor, *,
                         progress: bool = True) -> Variations:
    """``variations_per_source`` variations of each source slice of ``data.train``, through the bank.

    Without ``config.bank_generator``, the diffusion generator of ``config.diffusion_preset`` is trained (or loaded
    from its cache) on the real training split and fills the bank for these sources; with it, the bank must
    already hold that generator's variations of them (e.g. OpenAI variations made in notebook 02).
    """
    chosen = data.train.subset(sources)
    bank = SyntheticBank(config.bank_dir or None)
    n = config.variations_per_source * len(chosen)
    fingerprint = config.bank_generator
    try:
        if not fingerprint:
            settings = replace(config.generator_settings(), progress=progress)
            generator = registry.build("diffusion", settings, data.train, seed=config.seed)
            images, labels, ids, source_ids = registry.fill_and_sample(generator, bank, chosen, n, seed=config.seed,
                                                                       progress=progress)
            return Variations(images, labels, ids, source_ids, generator.fingerprint)
        images, labels, ids, source_ids = bank.sample(chosen.ids, n, seed=config.seed,
                                                      generator_fingerprint=fingerprint)
    except ValueError as error:
        if not fingerprint:
            raise
        raise ValueError(
            f"bank_generator={fingerprint!r}: {error}. Either fill {bank.root} with that generator for these "
            f"sources ({len(chosen)} slices, choose_sources' pick; {config.variations_per_source} variations each) "
            "before running the notebook, or leave bank_generator empty to use the local diffusion generator"
        ) from error
    return Variations(images, labels, ids, source_ids, fingerprint)


def real_vs_synthetic_panels(explainer: CamExplainer, real: Split, variations: Variations,
                             explained_class: str | int, classes: list[str], per_class: int) -> dict[str, Figure]:
    """One panel (real slice and its variations, with CAMs for ``explained_class``) per source.

    ``per_class`` sources of each of ``classes`` (the first among the variations' sources), named
    ``03_gradcam_<class>_<k>``; with Moderate and Non sources, two each, these are the thesis's Figures 3.1-3.4.
    Captions give the model's probability of ``explained_class``.
    """
    target = resolve_class(explained_class)
    position = {sid: i for i, sid in enumerate(real.ids)}
    panels: dict[str, Figure] = {}
    for name in classes:
        label = resolve_class(name)
        sources = [s for s in dict.fromkeys(variations.source_ids) if int(real.labels[position[s]]) == label]
        for k, source in enumerate(sources[:per_class], start=1):
            which = [i for i, s in enumerate(variations.source_ids) if s == source]
            images = torch.cat([real.images[position[source]][None], variations.images[which]])
            cams = explainer.explain(images, target)
            p = explainer.probabilities(images)[:, target]
            captions = [f"real, p={p[0]:.2f}"] + [f"synthetic {j}, p={q:.2f}" for j, q in enumerate(p[1:], 1)]
            panels[f"03_gradcam_{CLASS_NAMES[label]}_{k}"] = real_vs_synthetic_figure(
                images[0], cams[0], images[1:], cams[1:], captions=captions,
                title=f"{CLASS_NAMES[label]} source {source}: {explainer.method} for {CLASS_NAMES[target]} "
                      f"(p = probability of {CLASS_NAMES[target]})")
    return panels


def save_panels(panels: dict[str, Figure], figures_dir: str | Path) -> list[str]:
    """Save every panel as PNG and PDF under its name; returns the PNG file names."""
    return [save_figure(fig, name, figures_dir)[0].name for name, fig in panels.items()]


def save_agreement(table: pd.DataFrame, config: GradCamConfig, data: MRIData, variations: Variations) -> Path:
    """Write the agreement table as CSV in ``config.results``, with the data, model and generator beside it."""
    out = table.assign(data_fingerprint=data.fingerprint, model_name=config.model_name, cam_method=config.cam_method,
                       generator_fingerprint=variations.generator_fingerprint, seed=config.seed)
    path = config.results / "gradcam_agreement.csv"
    tmp = path.with_suffix(".tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


# -- the chapter's figures (the maps and their agreement are computed in mri_synth.training.gradcam) -------------

def real_vs_synthetic_figure(real_image, real_cam, synthetic_images, synthetic_cams, *, title: str = "",
                             captions: Sequence[str] | None = None, panel_inches: float = 1.9) -> Figure:
    """The thesis's Grad-CAM panel: the real slice and its variations (top), their CAM overlays (bottom).

    Args:
        real_image: uint8 ``[1, H, W]`` (tensor or array); ``real_cam`` its map ``[H, W]``.
        synthetic_images: uint8 ``[K, 1, H, W]``; ``synthetic_cams`` their maps ``[K, H, W]``.
        title: Figure title (e.g. ``"source Moderate_Demented, explained for Moderate_Demented"``).
        captions: ``1 + K`` column captions; default ``real``, ``synthetic 1`` ...
    """
    images = np.concatenate([as_array(real_image)[None], as_array(synthetic_images)])
    cams = np.concatenate([as_array(real_cam)[None], as_array(synthetic_cams)])
    if len(images) != len(cams):
        raise ValueError(f"{len(synthetic_images)} variations but {len(synthetic_cams)} CAMs; give one CAM each")
    captions = list(captions) if captions is not None else \
        ["real"] + [f"synthetic {i + 1}" for i in range(len(synthetic_images))]
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} columns (the real slice + each variation)")
    fig = new_figure(panel_inches * len(images), 2 * panel_inches + 0.6)
    axes = fig.subplots(2, len(images), squeeze=False)
    for column, (image, cam, caption) in enumerate(zip(images, cams, captions)):
        axes[0, column].imshow(image[0], cmap="gray", vmin=0, vmax=255)
        axes[0, column].set_title(caption, fontsize="small")
        axes[1, column].imshow(overlay_cam(image, cam))
        for ax in axes[:, column]:
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def plot_agreement(table: pd.DataFrame) -> Figure:
    """Box plots of each agreement metric per class: real-synthetic pairs beside the unrelated-real baseline.

    Reads the tidy table of :func:`mri_synth.training.gradcam.agreement_table`.
    """
    if table.empty:
        raise ValueError("the agreement table is empty: make it with agreement_table from at least one pair")
    metrics = list(dict.fromkeys(table["metric"]))
    fig = new_figure(5.0 * len(metrics), 3.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    order = [c for c in CLASS_NAMES if c in set(table["class_name"])]
    for ax, metric in zip(axes, metrics):
        part = table[table["metric"] == metric]
        boxplot(data=part, x="class_name", y="value", hue="pair_kind", order=order, hue_order=list(PAIR_KINDS),
                 ax=ax, showfliers=False)
        sns.stripplot(data=part, x="class_name", y="value", hue="pair_kind", order=order,
                      hue_order=list(PAIR_KINDS), dodge=True, jitter=False, ax=ax, size=2.5, palette="dark:black",
                      legend=False)  # no jitter: the figure is the same on every run
        ax.set_title(metric)
        ax.set_xlabel("source class")
        ax.set_ylabel("agreement of the two CAMs")
        ax.tick_params(axis="x", labelrotation=15)
    for ax in axes[1:]:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    return fig


__all__ = ["CamExplainer", "GradCamConfig", "agreement_table", "choose_sources", "load_data", "plot_agreement",
           "real_vs_synthetic_figure", "real_vs_synthetic_panels", "save_agreement", "save_figure", "save_panels",
           "show_figure",
           "show_figure", "summarize_agreement", "synthetic_variations", "trained_classifier"]
