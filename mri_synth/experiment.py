"""What the study notebooks call: a checked config from their parameters, the grid it means, its run and summaries.

Notebooks 04-06 (one per architecture) share :class:`ArchitectureStudy` and :func:`run_architecture`; only their
parameters differ. Notebook 07 reads every architecture's results with :func:`load_all_results`. The trial logic is
``study``'s, the statistics ``stats``'s and the figures ``plots``'s; this module only wires them to parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import paths
from .data import load_data
from .models import get_spec
from .study import StudyContext, TrialSpec, load_results, run_study, study_grid


@dataclass(frozen=True)
class ArchitectureStudy:
    """The study grid of one architecture, as a notebook's parameters describe it (checked on construction)."""

    arch: str = "cnn"
    data_source: str = "sample"
    real_fractions: tuple[float, ...] = (1.0, 0.3)
    arms: tuple[str, ...] = ("none", "repeat", "diffusion", "autoaugment")
    n_seeds: int = 2
    first_seed: int = 0
    epochs: int = 2
    max_steps: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    pretrained: bool = False
    input_size: int = 0
    diffusion_preset: str = "toy"
    device: str = "auto"
    cpu_threads: int = 0
    openai_model: str = ""  # the bank's OpenAI generator (settings as in notebook 02); empty: the default model
    synthetic_folder: str = ""  # images someone already made, one sub-folder per class (the "folder" arm)
    results_dir: str = ""
    figures_dir: str = ""
    specs: tuple[TrialSpec, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        get_spec(self.arch)  # an unknown architecture fails here, with the registry's message
        object.__setattr__(self, "real_fractions", tuple(float(f) for f in self.real_fractions))
        object.__setattr__(self, "arms", tuple(self.arms))
        if not isinstance(self.n_seeds, int) or self.n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive int (repeats per setting), got {self.n_seeds!r}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0 means the budget is in epochs), got {self.max_steps}")
        specs = study_grid([self.arch], self.real_fractions, self.arms, range(self.first_seed,
                           self.first_seed + self.n_seeds), epochs=self.epochs, max_steps=self.max_steps or None,
                           batch_size=self.batch_size, lr=self.lr, pretrained=self.pretrained,
                           input_size=self.input_size, generator=self.diffusion_preset)
        object.__setattr__(self, "specs", tuple(specs))

    @property
    def results(self) -> Path:
        """This architecture's results folder (inside the run's results folder)."""
        return paths.chosen_dir(self.results_dir, paths.results_dir) / self.arch

    @property
    def figures(self) -> Path:
        return paths.chosen_dir(self.figures_dir, paths.figures_dir)

    def plan(self) -> pd.DataFrame:
        """Trials per arm and real fraction: what the run will do (or resume)."""
        table = pd.DataFrame([s.table_columns() for s in self.specs])
        return table.groupby(["real_fraction", "policy"], sort=False).size().rename("trials").to_frame()


def external_generators(config: ArchitectureStudy) -> dict[str, Any]:
    """The generators of the arms whose images come from outside the trial: OpenAI's (bank filled by notebook 02 or
    ``mri-synth generate``; a trial never pays) and a folder of images."""
    kinds = {s.synthetic for s in config.specs}
    out: dict[str, Any] = {}
    if "openai" in kinds:
        from .synth import OpenAIGenerator

        out["openai"] = OpenAIGenerator(config.openai_model) if config.openai_model else OpenAIGenerator()
    if "folder" in kinds:
        if not config.synthetic_folder:
            raise ValueError("the folder arm needs synthetic_folder: a folder with one sub-folder per class")
        from .synth import FolderGenerator

        out["folder"] = FolderGenerator(config.synthetic_folder)
    return out


def run_architecture(config: ArchitectureStudy, *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or resume) the grid of one architecture; return its results and history tables."""
    context = StudyContext(data=load_data(config.data_source), device=config.device, cpu_threads=config.cpu_threads,
                           external_generators=external_generators(config))
    return run_study(config.specs, context, config.results, progress=progress)


def load_all_results(results_dir: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results and history of every architecture run into a results folder."""
    root = paths.chosen_dir(results_dir, paths.results_dir, ensure=False)
    if not any(root.rglob("trials/*.json")):
        raise FileNotFoundError(f"no trial results under {root}: run notebooks 04-06 (or mri-synth notebooks) first")
    return load_results(root)
