"""Notebooks 04-06: an architecture's study grid, from the notebook's parameters to its results and figures.

Notebooks 04-06 (one per architecture) share :class:`ArchitectureStudy` and :func:`run_architecture`; only their
parameters differ. The trial logic is ``study``'s, the statistics and figures ``analysis``'; this module wires them
to parameters and hands the notebooks what they show (``__all__``). Notebook 07 is :mod:`mri_synth.chapters.results`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mri_synth.analysis.plots import plot_learning_curves, plot_loss_distribution, save_figure, show_figure
from mri_synth.analysis.report import by_evaluation
from mri_synth.analysis.stats import summarize
from mri_synth.config import NotebookConfig
from mri_synth.data.cache import load_data
from mri_synth.study.distributed import run_study_ray
from mri_synth.study.runner import run_study
from mri_synth.study.trial import StudyContext
from mri_synth.study.trials import TrialSpec, study_grid
from mri_synth.synth.registry import DEFAULT_DIFFUSION_PRESET, GeneratorSettings, settings_from
from mri_synth.training.models import get_spec
from mri_synth.training.settings import TrainSettings


@dataclass(frozen=True)
class ArchitectureStudy(NotebookConfig, TrainSettings):
    """The study grid of one architecture, as a notebook's parameters or the command line describe it.

    The classifier's training settings (epochs, max_steps, equal_steps, batch_size, lr, weight_decay, input_size,
    precision) are :class:`~mri_synth.training.settings.TrainSettings`' fields, declared there once; the fields
    below are the grid's. Its defaults are the study's defaults everywhere (``mri-synth study`` takes them from
    here); the notebooks' parameter cells hold the quick profile's values.
    """

    arch: str = "cnn"  # a model registry name
    real_fractions: tuple[float, ...] = (1.0, 0.3)  # shares of the real training images, nested across fractions
    arms: tuple[str, ...] = ("none", "repeat", "diffusion", "autoaugment@0.3")  # see study.parse_arm
    splits: tuple[str, ...] = ("slice",)  # evaluations: slice (thesis-comparable), subject (people never seen)
    n_seeds: int = 5  # repeats per setting (the thesis used 100); in subject mode repeat r tests person fold r % 5
    first_seed: int = 0  # index of the first repeat, to extend a finished study
    pretrained: bool = False  # ImageNet weights for resnet18/vit (timm cache or a local file); the CNN has none
    diffusion_preset: str = DEFAULT_DIFFUSION_PRESET  # the diffusion arm's generator (registry.diffusion_presets())
    openai_model: str = ""  # the openai arm reads the bank notebook 02 filled with this model; empty: the default
    openai_quality: str = "low"  # ... and this quality (both decide which images the bank holds)
    synthetic_folder: str = ""  # the folder arm: images made elsewhere, one sub-folder per class
    validation: str = "carved"  # where checkpoints are chosen (study.trials.VALIDATION_MODES); carved: the protocol
    carry: bool = False  # each repeat starts from the weights the previous one ended with (needs validation none)
    subject_epochs: int = 0  # the subject evaluation's budget when its tuning froze another; 0: epochs
    subject_lr: float = 0.0  # the subject evaluation's lr when its tuning froze another; 0: lr
    compile_model: bool = False  # torch.compile each classifier (a speed-up where benchmarks/ shows one; same numbers)
    specs: tuple[TrialSpec, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        NotebookConfig.__post_init__(self)  # types, as every notebook's parameters
        TrainSettings.__post_init__(self)  # the settings' ranges, as everywhere they are carried
        get_spec(self.arch)  # an unknown architecture fails here, with the registry's message
        if self.n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive int (repeats per setting), got {self.n_seeds!r}")
        if self.subject_epochs < 0:
            raise ValueError(f"subject_epochs must be 0 (the same as epochs) or a positive int, got "
                             f"{self.subject_epochs!r}")
        if not (isinstance(self.subject_lr, (int, float)) and 0 <= self.subject_lr < 1):
            raise ValueError(f"subject_lr must be 0 (the same as lr) or in (0, 1), got {self.subject_lr!r}")
        specs = [spec for split in self.splits
                 for spec in study_grid([self.arch], self.real_fractions, self.arms,
                                        range(self.first_seed, self.first_seed + self.n_seeds),
                                        self.generator_settings(), **self.training_of(split), split=split,
                                        pretrained=self.pretrained, validation=self.validation,
                                        carry=self.carry)]
        object.__setattr__(self, "specs", tuple(specs))

    def training_of(self, split: str) -> dict[str, Any]:
        """The training settings of one evaluation's trials: ``subject_epochs`` and ``subject_lr`` replace ``epochs``
        and ``lr`` in ``subject`` mode when set (each evaluation's budget and lr are tuned on its own validation
        set)."""
        settings = asdict(self.training)
        if split == "subject" and self.subject_epochs:
            settings["epochs"] = self.subject_epochs
        if split == "subject" and self.subject_lr:
            settings["lr"] = self.subject_lr
        return settings

    def generator_settings(self) -> GeneratorSettings:
        """The generators' settings these parameters name (content and how to run them)."""
        return settings_from({k: getattr(self, k) for k in self.parameter_names()})

    @property
    def label(self) -> str:
        """The architecture as tables and figure titles name it, with how it was trained: a model that can start from
        ImageNet weights says whether it did (the thesis fine-tuned pretrained ResNet-18 and ViT)."""
        if get_spec(self.arch).timm_name is None:
            return self.arch  # the basic CNN: from scratch, as in the thesis
        how = "ImageNet-pretrained" if self.pretrained else "from scratch, not the thesis's ImageNet-pretrained setting"
        return f"{self.arch} ({how})"

    @property
    def results(self) -> Path:
        """This architecture's results folder (inside the run's results folder)."""
        return super().results / self.arch

    def plan(self) -> pd.DataFrame:
        """Trials per arm and real fraction: what the run will do (or resume)."""
        table = pd.DataFrame([s.table_columns() for s in self.specs])
        return table.groupby(["split", "real_fraction", "policy"], sort=False).size().rename("trials").to_frame()


def run_architecture(config: ArchitectureStudy, *, progress: bool = True,
                     ray: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or resume) the grid of one architecture; return its results and history tables.

    ``ray``: run it on Ray instead, with these ``distributed.run_study_ray`` arguments (``{}``: a local Ray).
    """
    context = StudyContext(data=load_data(config.data_source), device=config.device, cpu_threads=config.cpu_threads,
                           compile=config.compile_model,
                           generators=config.generator_settings())
    if ray is not None:
        return run_study_ray(config.specs, context, config.results, progress=progress, **ray)
    return run_study(config.specs, context, config.results, progress=progress)


__all__ = ["ArchitectureStudy", "by_evaluation", "plot_learning_curves", "plot_loss_distribution", "run_architecture",
           "save_figure", "show_figure", "summarize"]
