"""Notebook 07: every architecture's finished trials, both evaluations beside the thesis's numbers.

:class:`ResultsConfig` holds the notebook's parameters (the declared family of contrasts among them);
:func:`load_all_results` reads every architecture's trials; :func:`exploratory_contrasts` compares every arm with a
reference arm as an exploratory family (its own Holm correction, labelled so), beside the declared family that
``paired_contrasts`` reports; :func:`thesis_budget_results` reads the thesis-budget rows' folder. Statistics and
figures are ``analysis``'; this module hands the notebook what it shows (``__all__``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from mri_synth import paths
from mri_synth.analysis.contrasts import against_reference, paired_contrasts, parse_contrast
from mri_synth.analysis.findings import thesis_budget_block
from mri_synth.analysis.plots import (
    plot_loss_distribution,
    plot_per_class_recall,
    plot_policies_at_fraction,
    save_figure,
    show_figure,
)
from mri_synth.analysis.report import architecture_table, by_evaluation, evaluation_summary, plot_two_evaluations
from mri_synth.analysis.stats import thesis_comparison
from mri_synth.analysis.synthetic_figures import outcome_against_fd, source_table
from mri_synth.config import NotebookConfig
from mri_synth.data.types import CLASS_NAMES
from mri_synth.study.runner import load_results, per_image_losses


@dataclass(frozen=True)
class ResultsConfig(NotebookConfig):
    """Notebook 07: every architecture's finished trials, compared with a reference arm."""

    reference: str = "30% real"  # the arm every other arm at the same fraction is compared with, pair-wise
    real_fraction: float = 0.3  # the fraction of the thesis's headline comparison
    contrasts: tuple[str, ...] = (  # the family Holm corrects over, declared before the run: "A vs B"
        "30% real + 70% diffusion vs 30% real", "30% real + 70% diffusion vs 30% real + autoaugment",
        "30% real + 70% diffusion vs 100% real")
    # issue 23's two-by-two reading (blur, new content), declared before the run: a family of its own, Holm over it
    diagnostic_contrasts: tuple[str, ...] = ()
    alpha: float = 0.05  # the level the repeats are checked against
    # the thesis-comparable rows (the thesis's epoch budget, slice split) when recorded in a folder of their own
    thesis_budget_dir: str = ""
    # each trial's added images measured against real validation slices (benchmarks/source_fidelity.py): Figure 7.3
    source_fidelity: str = ""
    # the architectures to read (empty: every one in the results folder); a profile whose grids are still running
    # names the finished ones, so a recorded notebook does not change under it as trials land
    architectures: tuple[str, ...] = ()


def load_all_results(results_dir: str = "", architectures: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results and history of every architecture run into a results folder, or of ``architectures`` only."""
    root = paths.chosen_dir(results_dir, paths.results_dir, ensure=False)
    if not any(root.rglob("trials/*.json")):
        raise FileNotFoundError(f"no trial results under {root}: run notebooks 04-06 (or mri-synth notebooks) first")
    results, history = load_results(root)
    if not architectures:
        return results, history
    missing = sorted(set(architectures) - set(results.arch))
    if missing:
        raise FileNotFoundError(f"no trials of {missing} under {root} (it holds {sorted(set(results.arch))}): run "
                                "their notebooks first, or leave them out of the architectures parameter")
    return results[results.arch.isin(architectures)], history[history.arch.isin(architectures)]


def exploratory_contrasts(results: pd.DataFrame, config: ResultsConfig) -> pd.DataFrame:
    """Every arm at ``config.real_fraction`` against ``config.reference`` in the slice evaluation's loss: an
    exploratory family (not declared before the run), Holm-corrected on its own and labelled ``exploratory``."""
    at = results[results.real_fraction == config.real_fraction]
    return paired_contrasts(at, against_reference(at, config.reference), "test_loss", alpha=config.alpha,
                            exploratory=True)


def diagnostic_family(results: pd.DataFrame, config: ResultsConfig) -> pd.DataFrame | None:
    """The declared diagnostic family (``config.diagnostic_contrasts``: the reconstruction arms beside repeat, 100%
    real and diffusion), Holm-corrected over itself; where none is declared or none has both arms recorded yet, a
    sentence saying so is printed and nothing is returned."""
    arms = set(results.policy)
    ready = [c for c in config.diagnostic_contrasts if set(parse_contrast(c)) <= arms]
    if not ready:
        print("no diagnostic contrasts declared (the profile's diagnostic_contrasts)" if not config.diagnostic_contrasts
              else f"none of the diagnostic contrasts has both arms recorded yet: {list(config.diagnostic_contrasts)}")
        return None
    return paired_contrasts(results, ready, alpha=config.alpha)


def show_outcome_against_fd(results: pd.DataFrame, config: ResultsConfig) -> pd.DataFrame | None:
    """Show and save Figure 7.3 from ``config.source_fidelity`` (one row per trial, written by
    ``benchmarks/source_fidelity.py``) and return it as a table (``source_table``: the two-by-two reading, each
    source's readout, FD, label fidelity, PSNR and SSIM); where no table is named, print a sentence saying so."""
    if not config.source_fidelity:
        print("no source fidelity table named (source_fidelity): benchmarks/source_fidelity.py writes one")
        return None
    fidelity = pd.read_csv(paths.project_path(config.source_fidelity))
    show_figure(outcome_against_fd(results, fidelity), "07_outcome_against_fd", config.figures)
    return source_table(results, fidelity).round(3)


def thesis_budget_results(config: ResultsConfig) -> pd.DataFrame | None:
    """The thesis-budget rows (``config.thesis_budget_dir``, its ``cnn`` folder): ``None`` when none is named,
    an empty table when the folder holds no trials yet."""
    if not config.thesis_budget_dir:
        return None
    folder = paths.project_path(config.thesis_budget_dir) / "cnn"
    return load_results(folder)[0] if folder.is_dir() else pd.DataFrame()


__all__ = ["CLASS_NAMES", "ResultsConfig", "architecture_table", "by_evaluation", "diagnostic_family",
           "evaluation_summary", "exploratory_contrasts", "load_all_results", "paired_contrasts", "per_image_losses",
           "plot_loss_distribution", "plot_per_class_recall", "plot_policies_at_fraction", "plot_two_evaluations",
           "save_figure", "show_figure", "show_outcome_against_fd", "thesis_budget_block", "thesis_budget_results",
           "thesis_comparison"]
