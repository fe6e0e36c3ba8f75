r"""Execute the study's notebooks on the real data into benchmarks/results/<profile>/: every chapter, one command.

    MRI_SYNTH_DATA=$(realpath ../shared/data/alzheimer_mri) .venv/bin/python benchmarks/record_real_notebooks.py \
        [--profile real|rerun] [--only 04 07]

``real`` (issue 21, the default) records every chapter into ``benchmarks/results/real/``, figures in ``figures/``;
``rerun`` (issues 23 and 24) records the training and results chapters (04-07) of ``profiles/rerun.yaml`` into
``benchmarks/results/rerun/``, figures in ``figures/rerun/``. A training notebook is recorded only when every trial
its profile plans for that architecture is in the results folder: recording reads trials, it never trains the rest
(``benchmarks/rerun.sh`` runs them a repeat at a time).

Each runs with the real profile's parameters (profiles/real.yaml), except ``figures_dir``: it is left empty and the
figures go to the project's ``figures/`` through ``MRI_SYNTH_FIGURES``, so that nbval, re-executing the recorded
notebooks in ``make test`` (which points ``MRI_SYNTH_FIGURES`` at a temporary folder), never rewrites ``figures/``.

- 01 reads the dataset; 02 trains (or finds in the cache) a latent-cpu generator on a stratified 30% of the training
  split and makes its variations; 03 trains (or finds) the reference CNN and a generator on the whole training split.
  These are recorded, not re-run by the tests (a test checks their stored outputs' structure).
- 04 (and 05, 06 once their grids are recorded) finds every trial of the recorded grid finished and only reads,
  summarises and plots them; 07 reads every architecture's trials. ``make test`` re-executes these under nbval and
  compares every table they show; ``tests/nbval_sanitize.cfg`` masks only what changes between runs (timings,
  progress bars, addresses), and images are left out of the comparison by nbval itself.

Each recorded notebook opens with a cell that says what it shows and which recorded trials or cached generator its
numbers come from. Record after committing the code: the notebooks then show results of a commit that exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mri_synth.notebooks import (  # noqa: E402
    NOTEBOOK_DIR,
    load_profile,
    notebook_parameters,
    profile_study,
    trained_arch,
)
from mri_synth.training import heap  # noqa: E402

OUT = ROOT / "benchmarks/results/real"
RESULTS = OUT / "results"
FIGURES = {"real": ROOT / "figures", "rerun": ROOT / "figures" / "rerun"}

OPENINGS = {
    "01": "Notebook 01 on the full Alzheimer MRI dataset (6,400 slices): the class counts of the thesis's Table 2.1, "
          "example slices (Figure 2.1) and the leakage audit that finds 200 people of 32 slices each. Its numbers "
          "come from the images alone; nothing here is trained.",
    "02": "Notebook 02 on the real data: a latent-cpu diffusion generator trained on a stratified 30% of the training "
          "split (seed 0) and its variations of those slices (Figure 2.2), with their intensity, memorisation and "
          "label-fidelity checks. The generator is the cached one of that sample and seed (its fingerprint is in the "
          "bank summary below); the fidelity tables at the end are the recorded offline measurements.",
    "03": "Notebook 03 on the real data: Grad-CAM maps of the basic CNN trained on every real training slice, on real "
          "slices and on their synthetic variations (the thesis's Figures 3.1-3.4), and how well the two agree. The "
          "classifier and the latent-cpu generator (trained on the whole training split) are the cached ones of this "
          "recipe; the agreement table is also saved as `03_gradcam_agreement.csv` beside this notebook.",
    "04": "Notebook 04 on the real data: the basic CNN's grid in both evaluations, read from the 140 recorded trials "
          "in `results/cnn/` (nothing is trained here). Every table below is recomputed from those trial files and "
          "checked by nbval in `make test`.",
    "05": "Notebook 05 on the real data: ResNet-18, trained from scratch (not the thesis's ImageNet-pretrained "
          "setting), read from the recorded trials in `results/resnet18/`. Every table below is checked by nbval.",
    "06": "Notebook 06 on the real data: the small ViT, trained from scratch (not the thesis's ImageNet-pretrained "
          "setting), read from the recorded trials in `results/`. Every table below is checked by nbval.",
    "07": "Notebook 07 on the real data: the study's answer in both evaluations (Figures 7.1 and 7.2 for each), read "
          "from the recorded trials in `results/` and the thesis-budget rows in `thesis_budget/`. Every table below "
          "is recomputed from those trial files and checked by nbval in `make test`.",
}
RERUN_OPENINGS = {
    "04": "Notebook 04 of the rerun (`profiles/rerun.yaml`, issue 23): the basic CNN's grid on one machine at the "
          "tuned budgets, both evaluations, read from the recorded trials in `results/cnn/` (nothing is trained "
          "here). Every table below is recomputed from those trial files and checked by nbval in `make test`.",
    "05": "Notebook 05 of the rerun (issue 24): ResNet-18 trained from scratch (not the thesis's ImageNet-pretrained "
          "setting) at its tuned size and budget, read from the recorded trials in `results/resnet18/`. Every table "
          "below is checked by nbval.",
    "06": "Notebook 06 of the rerun (issue 24): ViT-Tiny trained from scratch (not the thesis's ImageNet-pretrained "
          "ViT-B/16) at its tuned size and budget, read from the recorded trials in `results/vit_tiny/`. Every table "
          "below is checked by nbval.",
    "07": "Notebook 07 of the rerun: the study's answer for every architecture whose grid is recorded in full in "
          "`results/` (the profile's `architectures`; the others join when their last trial is in), both "
          "evaluations, the declared and diagnostic contrasts and Figure 7.3. Every table below is recomputed from "
          "the trial files and checked by nbval in `make test`.",
}
PROFILES = {"real": (OUT, OPENINGS), "rerun": (ROOT / "benchmarks/results/rerun", RERUN_OPENINGS)}
ARCH_NOTEBOOK = {"04": "04_train_cnn", "05": "05_train_resnet18", "06": "06_train_vit"}


def missing_trials(profile: str, stem: str) -> tuple[int, int]:
    """(trials of the architecture notebook ``stem``'s grid not in the profile's results folder, trials planned)."""
    study = profile_study(profile, trained_arch(load_profile(profile), ARCH_NOTEBOOK[stem]))  # what the notebook runs
    folder = PROFILES[profile][0] / "results" / study.arch / "trials"
    return sum(not (folder / f"{spec.key}.json").exists() for spec in study.specs), len(study.specs)


def available(profile: str = "real") -> list[str]:
    """The notebooks that can be recorded now: a training notebook once every trial of its grid is recorded."""
    return [stem for stem in PROFILES[profile][1] if stem not in ARCH_NOTEBOOK or missing_trials(profile, stem)[0] == 0]


def record(stem: str, profile: dict, name: str = "real") -> Path:
    notebook = next(NOTEBOOK_DIR.glob(f"{stem}_*.ipynb"))
    out, openings = PROFILES[name]
    params = notebook_parameters(profile, notebook, ROOT / "runs" / name)
    params["figures_dir"] = ""  # MRI_SYNTH_FIGURES below: figures/ now, a temporary folder under make test
    output = out / notebook.name
    start = time.perf_counter()
    os.environ["MRI_SYNTH_FIGURES"] = str(FIGURES[name])
    with heap.retained_in_subprocesses():
        papermill.execute_notebook(str(notebook), str(output), parameters=params, cwd=str(NOTEBOOK_DIR),
                                   progress_bar={"desc": notebook.stem, "unit": "cell"})
    nb = nbformat.read(output, as_version=4)
    for cell in nb.cells:  # recorded outputs are compared whole: nbval's sanitize file masks what varies
        if cell.cell_type == "code":
            cell.source = cell.source.replace("# NBVAL_IGNORE_OUTPUT\n", "")
    opening = nbformat.v4.new_markdown_cell(f"> **Recorded on the real data.** {openings[stem]}")
    opening.metadata["tags"] = ["recorded-opening"]
    nb.cells.insert(0, opening)
    nbformat.write(nb, output)
    print(f"{notebook.stem}: {time.perf_counter() - start:.0f} s -> {output.relative_to(ROOT)}", flush=True)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="real")
    parser.add_argument("--only", nargs="*", default=None,
                        help="notebook prefixes (default every one recordable now)")
    args = parser.parse_args(argv)
    if not os.environ.get("MRI_SYNTH_DATA"):
        parser.error("set MRI_SYNTH_DATA to the real dataset (../shared/data/alzheimer_mri)")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)benchmarks/results", ":(exclude)figures"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    if dirty:
        print("warning: the code has uncommitted changes; commit it first so the recorded notebooks show a commit's "
              "results", file=sys.stderr)
    profile = load_profile(args.profile)
    openings = PROFILES[args.profile][1]
    for stem in args.only or available(args.profile):
        if stem not in openings:
            parser.error(f"--only {stem}: the {args.profile} profile records {' '.join(openings)}")
        if stem in ARCH_NOTEBOOK:
            missing, planned = missing_trials(args.profile, stem)
            if missing:
                parser.error(f"--only {stem}: {missing} of the {planned} trials the {args.profile} profile plans "
                             "are not recorded, and recording would train them: run them first (benchmarks/rerun.sh "
                             "for the rerun), then record")
        record(stem, profile, args.profile)


if __name__ == "__main__":
    main()
