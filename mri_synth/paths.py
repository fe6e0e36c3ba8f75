"""Where the project keeps things: one place derives every directory from the project root.

Each directory can be redirected by an environment variable, so a CI job or a cluster run can put caches and
results somewhere else without touching code:

    MRI_SYNTH_DATA      the default data source (a hub id, a local folder in the hub's layout, an image folder)
    MRI_SYNTH_CACHE     decoded-split cache, trained generators, timm/HF caches of this project
    MRI_SYNTH_RESULTS   results tables of studies
    MRI_SYNTH_FIGURES   figures written by notebooks and reports

Nothing here creates a directory at import time; callers ask with ``ensure=True`` when they are about to write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``pyproject.toml``)."""

SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"
"""The bundled stratified sample of real images (an image folder with train/ and test/)."""

HUB_DATASET_ID = "Falah/Alzheimer_MRI"
"""The Hugging Face hub dataset the thesis used; the default source of the full study."""


def _dir(env: str, default: Path, ensure: bool) -> Path:
    path = Path(os.environ[env]).expanduser() if os.environ.get(env) else default
    if ensure:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(ensure: bool = False) -> Path:
    """Decoded splits, trained generators and other rebuildable artefacts (git-ignored)."""
    return _dir("MRI_SYNTH_CACHE", PROJECT_ROOT / ".cache", ensure)


def results_dir(ensure: bool = False) -> Path:
    """Results tables of studies (git-ignored)."""
    return _dir("MRI_SYNTH_RESULTS", PROJECT_ROOT / "results", ensure)


def figures_dir(ensure: bool = False) -> Path:
    """Figures of runs that name no folder (the quick profile, ``make refresh-notebooks``): ``runs/figures``.

    The project's ``figures/`` holds the real-data study's figures only; a profile writes there by naming it
    (``figures_dir: figures``)."""
    return _dir("MRI_SYNTH_FIGURES", PROJECT_ROOT / "runs" / "figures", ensure)


def runs_dir(ensure: bool = False) -> Path:
    """Executed notebooks of the notebook batch, one folder per run (git-ignored)."""
    return _dir("MRI_SYNTH_RUNS", PROJECT_ROOT / "runs", ensure)


def default_source() -> str:
    """The data source used when none is named: ``$MRI_SYNTH_DATA``, else the hub dataset."""
    return os.environ.get("MRI_SYNTH_DATA") or HUB_DATASET_ID


def project_path(value: str | os.PathLike) -> Path:
    """A path a notebook parameter or profile names: relative paths are taken from the project root, so a value
    means the same folder whether it is read in a notebook (run in ``notebooks/``), the batch or the command line."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def chosen_dir(value: str | os.PathLike | None, default: "Callable[..., Path]", ensure: bool = True) -> Path:
    """A directory a notebook parameter names (see :func:`project_path`), or the default when it is empty."""
    path = project_path(value) if value else default()
    if ensure:
        path.mkdir(parents=True, exist_ok=True)
    return path
