"""The notebook batch: run every numbered notebook, in order, through papermill with a profile's parameters.

A profile (``profiles/<name>.yaml``) holds ``common`` parameters for every notebook and a section per notebook
(keyed by its file stem, e.g. ``04_train_cnn``). Each notebook receives only the parameters its ``parameters`` cell
declares, plus ``figures_dir`` and ``results_dir`` inside the run folder, so one run's executed notebooks, figures and
results tables sit together. The run folder is stable per profile (``runs/<profile>``), so running the batch again
resumes a killed study instead of starting over (the trial runner skips finished trials).

What this leaves to others: the notebooks hold the narrative; every computation they show lives in the package.
"""

from __future__ import annotations

import ast
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mri_synth import paths
from mri_synth.chapters.training import ArchitectureStudy
from mri_synth.training import heap

NOTEBOOK_DIR = paths.PROJECT_ROOT / "notebooks"
PROFILE_DIR = paths.PROJECT_ROOT / "profiles"
_NUMBERED = re.compile(r"^\d\d_.+\.ipynb$")


class ProfileError(ValueError):
    """A profile cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class NotebookRun:
    """One executed notebook of a batch."""

    notebook: str
    output: Path
    seconds: float


def numbered_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The study's notebooks (``NN_name.ipynb``), in order."""
    return sorted(p for p in directory.iterdir() if _NUMBERED.match(p.name))


RENAMED = {
    "diffusion_image_size": "name a diffusion preset instead (diffusion_preset: small is the pixel model at 32 px and "
                            "120 steps, notebook 02's former defaults; a preset keeps its own size otherwise)",
    "diffusion_train_steps": "name a diffusion preset instead (diffusion_preset: small is the pixel model at 32 px "
                             "and 120 steps, notebook 02's former defaults)",
}
"""Profile keys that no longer exist, with what replaces them: a profile that still uses one fails naming the way."""


def load_profile(name_or_path: str | os.PathLike) -> dict:
    """Read a profile by name (``quick``, ``thesis``) or path; check its shape."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ProfileError(f"profile {str(name_or_path)!r} not found: use one of {known} or a path to a YAML file")
    profile = yaml.safe_load(path.read_text()) or {}
    unknown = set(profile) - {"description", "common", "notebooks"}
    if unknown:
        raise ProfileError(f"{path}: unknown top-level keys {sorted(unknown)}; use description, common, notebooks")
    declared = declared_parameters()
    for stem in profile.get("notebooks") or {}:
        if stem not in declared:
            raise ProfileError(f"{path}: section {stem!r} names no notebook; notebooks are {sorted(declared)}")
    profile["common"] = profile.get("common") or {}
    profile["notebooks"] = {stem: section or {} for stem, section in (profile.get("notebooks") or {}).items()}
    everywhere = set().union(*declared.values())
    for key in [*profile["common"], *(k for section in profile["notebooks"].values() for k in section)]:
        if key in RENAMED:
            raise ProfileError(f"{path}: parameter {key!r} is gone: {RENAMED[key]}")
    for key in profile["common"]:
        if key not in everywhere:
            raise ProfileError(f"{path}: common parameter {key!r} is declared by no notebook (a typo would run the "
                               f"wrong study); the notebooks' parameters are {sorted(everywhere)}")
    for stem, section in profile["notebooks"].items():
        for key in section:
            if key not in declared[stem]:
                raise ProfileError(f"{path}: parameter {key!r} of section {stem!r} is not declared by that notebook;"
                                   f" its parameters are {sorted(declared[stem])}")
    profile["name"] = path.stem
    return profile


def declared_parameters(directory: Path = NOTEBOOK_DIR) -> dict[str, set[str]]:
    """Each numbered notebook's stem -> the names its ``parameters`` cell declares (papermill's reading)."""
    import papermill

    return {nb.stem: set(papermill.inspect_notebook(str(nb))) for nb in numbered_notebooks(directory)}


def notebook_parameters(profile: dict, notebook: Path, run_dir: Path) -> dict:
    """The parameters one notebook receives: the run's folders, then common, then its own section.

    Common parameters go to the notebooks that declare them (``load_profile`` has refused any that none does);
    figures and results go inside the run folder unless the profile names a folder itself (the real-data study
    writes the project's ``figures/``).
    """
    import papermill

    declared = set(papermill.inspect_notebook(str(notebook)))
    wanted = {"figures_dir": str(run_dir / "figures"), "results_dir": str(run_dir / "results")}
    wanted |= {**profile["common"], **(profile["notebooks"].get(notebook.stem) or {})}
    return {k: v for k, v in wanted.items() if k in declared}


ARCH_NOTEBOOKS = {"04_train_cnn": "cnn", "05_train_resnet18": "resnet18", "06_train_vit": "vit"}
"""The notebooks that train an architecture, with the one each trains unless its profile section names another."""


def trained_arch(profile: dict, stem: str) -> str:
    """The architecture training notebook ``stem`` (04-06) trains under a loaded profile: its section's (or common's)
    ``arch``, else the notebook's own (a section may name another model, e.g. ``vit_tiny``)."""
    return {**profile["common"], **(profile["notebooks"].get(stem) or {})}.get("arch", ARCH_NOTEBOOKS[stem])


def notebook_namespace(profile: dict, notebook: Path, run_dir: Path | None = None) -> dict:
    """What a notebook's ``parameters`` cell leaves in its namespace when run with a profile: the cell's own defaults,
    then what papermill injects (``notebook_parameters``); ``run_dir`` defaults to the batch's ``runs/<profile>``."""
    import papermill

    namespace = {}
    for name, parameter in papermill.inspect_notebook(str(notebook)).items():
        try:
            namespace[name] = ast.literal_eval(parameter["default"])
        except (ValueError, SyntaxError):
            raise ProfileError(f"{notebook.name}: parameter {name} = {parameter['default']} is not a literal; give "
                               "parameters literal defaults (papermill injects literals beside them)") from None
    run_dir = run_dir if run_dir is not None else paths.runs_dir() / profile["name"]
    return namespace | notebook_parameters(profile, notebook, run_dir)


def profile_study(name_or_path: str | os.PathLike, arch: str = "cnn") -> ArchitectureStudy:
    """The grid of ``arch`` that a profile's training notebook (04-06) runs: the study that notebook builds from its
    own defaults and the profile's parameters, so ``mri-synth study --profile``, the cost model and the recording of a
    notebook plan exactly the trials the notebook would (one builder, not three that drift apart)."""
    profile = load_profile(name_or_path)
    trains = {trained_arch(profile, stem): stem for stem in ARCH_NOTEBOOKS}
    if arch not in trains:
        raise ValueError(f"profile {profile['name']} trains no {arch!r}: its notebooks 04-06 train {', '.join(trains)}")
    return ArchitectureStudy.from_params(notebook_namespace(profile, NOTEBOOK_DIR / f"{trains[arch]}.ipynb"))


def run_batch(
    profile: str | os.PathLike = "quick",
    *,
    run_dir: str | os.PathLike | None = None,
    only: list[str] | None = None,
    log_output: bool = False,
) -> list[NotebookRun]:
    """Execute the numbered notebooks in order with a profile's parameters.

    Args:
        profile: a profile name in ``profiles/`` or a path to a YAML file.
        run_dir: where executed notebooks, figures and results go (default ``runs/<profile>``).
        only: run just these notebook stems or prefixes (e.g. ``["01", "07_results"]``).
        log_output: stream cell outputs to the log while running.

    Returns:
        One record per executed notebook.
    """
    import papermill

    config = load_profile(profile)
    run_dir = Path(run_dir) if run_dir else paths.runs_dir() / config["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    notebooks = numbered_notebooks()
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(o) for o in only)]
        if not notebooks:
            raise ProfileError(f"--only {only} matches no notebook in {NOTEBOOK_DIR}")
    done = []
    for nb in notebooks:
        output = run_dir / nb.name
        start = time.perf_counter()
        with heap.retained_in_subprocesses():  # each kernel is a new process: it reads the setting at start-up
            papermill.execute_notebook(
                str(nb),
                str(output),
                parameters=notebook_parameters(config, nb, run_dir),
                cwd=str(NOTEBOOK_DIR),
                log_output=log_output,
                # a bar over the notebook's cells, named after it; with the outputs streamed to the log it would
                # only interleave with them
                progress_bar=False if log_output else {"desc": nb.stem, "unit": "cell"},
            )
        done.append(NotebookRun(nb.stem, output, time.perf_counter() - start))
        print(f"{nb.stem}: {done[-1].seconds:.1f} s -> {output}", flush=True)
    return done
