"""What the study notebooks call: a checked config from their parameters, the grid it means, its run and summaries.

Notebooks 04-06 (one per architecture) share :class:`ArchitectureStudy` and :func:`run_architecture`; only their
parameters differ. Notebook 07 reads every architecture's results with :func:`load_all_results`. The trial logic is
``study``'s, the statistics ``stats``'s and the figures ``plots``'s; this module only wires them to parameters.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch

from mri_synth import paths
from mri_synth.config import NotebookConfig
from mri_synth.data.cache import load_data
from mri_synth.training.models import get_spec
from mri_synth.study.runner import load_results, run_study
from mri_synth.study.trials import StudyContext, TrialSpec, study_grid
from mri_synth.synth.registry import DEFAULT_DIFFUSION_PRESET, GeneratorSettings, settings_from


@dataclass(frozen=True)
class ArchitectureStudy(NotebookConfig):
    """The study grid of one architecture, as a notebook's parameters or the command line describe it.

    Its defaults are the study's defaults everywhere (``mri-synth study`` takes them from here); the notebooks'
    parameter cells hold the quick profile's values.
    """

    arch: str = "cnn"  # a model registry name
    real_fractions: tuple[float, ...] = (1.0, 0.3)  # shares of the real training images, nested across fractions
    arms: tuple[str, ...] = ("none", "repeat", "diffusion", "autoaugment@0.3")  # see study.parse_arm
    splits: tuple[str, ...] = ("slice",)  # evaluations: slice (thesis-comparable), subject (people never seen)
    n_seeds: int = 5  # repeats per setting (the thesis used 100); in subject mode repeat r tests person fold r % 5
    first_seed: int = 0  # index of the first repeat, to extend a finished study
    epochs: int = 10  # the thesis trained a fixed number of epochs
    max_steps: int = 0  # a budget in optimizer steps instead (the same for every arm); 0 keeps the epoch budget
    equal_steps: bool = False  # every arm trains epochs x ceil(100% pool / batch_size) steps: arms differ in images only
    batch_size: int = 64
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.0  # Adam's; the thesis used none
    pretrained: bool = False  # ImageNet weights for resnet18/vit (timm cache or a local file); the CNN has none
    input_size: int = 0  # model input side; 0 keeps the registry's (224 for the pretrained models)
    diffusion_preset: str = DEFAULT_DIFFUSION_PRESET  # the diffusion arm's generator (registry.diffusion_presets())
    openai_model: str = ""  # the openai arm reads the bank notebook 02 filled with this model; empty: the default
    openai_quality: str = "low"  # ... and this quality (both decide which images the bank holds)
    synthetic_folder: str = ""  # the folder arm: images made elsewhere, one sub-folder per class
    # the classifiers' arithmetic: auto = bf16 autocast where the hardware runs it (CUDA); fp32 = no autocast and no
    # TF32 convolutions, as on this project's CPUs, so trials run on a GPU pair with trials run on a CPU
    precision: str = "auto"
    specs: tuple[TrialSpec, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        get_spec(self.arch)  # an unknown architecture fails here, with the registry's message
        if self.n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive int (repeats per setting), got {self.n_seeds!r}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0 means the budget is in epochs), got {self.max_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        specs = [spec for split in self.splits
                 for spec in study_grid([self.arch], self.real_fractions, self.arms,
                                        range(self.first_seed, self.first_seed + self.n_seeds),
                                        self.generator_settings(), epochs=self.epochs,
                                        max_steps=self.max_steps or None, equal_steps=self.equal_steps,
                                        batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                                        split=split, pretrained=self.pretrained, input_size=self.input_size)]
        object.__setattr__(self, "specs", tuple(specs))

    def generator_settings(self) -> GeneratorSettings:
        """The generators' settings these parameters name (content and how to run them)."""
        return settings_from({k: getattr(self, k) for k in self.parameter_names()})

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
                           generators=config.generator_settings(),
                           bf16=False if config.precision == "fp32" else None)
    with _precision(config.precision):
        if ray is not None:
            from mri_synth.study.distributed import run_study_ray

            return run_study_ray(config.specs, context, config.results, progress=progress, **ray)
        return run_study(config.specs, context, config.results, progress=progress)


PRECISIONS = ("auto", "fp32")


@contextmanager
def _precision(precision: str) -> Iterator[None]:
    """``fp32``: no TF32 in cuDNN convolutions or matmuls inside the block (torch lets cuDNN use TF32 by default)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if precision == "fp32":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@dataclass(frozen=True)
class ResultsConfig(NotebookConfig):
    """Notebook 07: every architecture's finished trials, compared with a reference arm."""

    reference: str = "30% real"  # the arm every other arm at the same fraction is compared with, pair-wise
    real_fraction: float = 0.3  # the fraction of the thesis's headline comparison
    contrasts: tuple[str, ...] = (  # the family Holm corrects over, declared before the run: "A vs B"
        "30% real + 70% diffusion vs 30% real", "30% real + 70% diffusion vs 30% real + autoaugment",
        "30% real + 70% diffusion vs 100% real")
    alpha: float = 0.05  # the level the repeats are checked against
    # the thesis-comparable rows (the thesis's epoch budget, slice split) when recorded in a folder of their own
    thesis_budget_dir: str = ""


def load_all_results(results_dir: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results and history of every architecture run into a results folder."""
    root = paths.chosen_dir(results_dir, paths.results_dir, ensure=False)
    if not any(root.rglob("trials/*.json")):
        raise FileNotFoundError(f"no trial results under {root}: run notebooks 04-06 (or mri-synth notebooks) first")
    return load_results(root)
