"""Execute notebooks 04 and 07 on the real-data study's recorded trials into benchmarks/results/real/ (issue 14).

    MRI_SYNTH_DATA=../shared/data/alzheimer_mri .venv/bin/python benchmarks/record_real_notebooks.py [--only 07]

Both run with the real profile's parameters (profiles/real.yaml), except ``figures_dir``: it is left empty and the
figures go to the project's ``figures/`` through ``MRI_SYNTH_FIGURES``, so that nbval, re-executing the recorded
notebook 07 in ``make test`` (which points ``MRI_SYNTH_FIGURES`` at a temporary folder), never rewrites ``figures/``.
Notebook 04 finds every trial finished and only reads, summarises and plots them (it trains nothing). In the
recorded notebook 07 the cells that print tables computed from the recorded trials keep their outputs under nbval's
check (their ``NBVAL_IGNORE_OUTPUT`` marker is taken out): a change of the recorded trials or of the statistics that
changes a number fails ``make test`` until the notebook is recorded again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mri_synth.notebooks import NOTEBOOK_DIR, load_profile, notebook_parameters  # noqa: E402
from mri_synth.training import heap  # noqa: E402

OUT = ROOT / "benchmarks/results/real"
CHECKED = ("evaluation_summary(", "paired_contrasts(", "exploratory_contrasts(", "thesis_comparison(",
           "thesis_budget_block(")  # the table cells whose outputs nbval compares in the recorded notebook 07


def record(stem: str, profile: dict) -> Path:
    notebook = next(NOTEBOOK_DIR.glob(f"{stem}*.ipynb"))
    params = notebook_parameters(profile, notebook, ROOT / "runs" / "real")
    params["figures_dir"] = ""  # MRI_SYNTH_FIGURES below: figures/ now, a temporary folder under make test
    output = OUT / notebook.name
    start = time.perf_counter()
    os.environ["MRI_SYNTH_FIGURES"] = str(ROOT / "figures")
    with heap.retained_in_subprocesses():
        papermill.execute_notebook(str(notebook), str(output), parameters=params, cwd=str(NOTEBOOK_DIR),
                                   progress_bar=False)
    if stem.startswith("07"):
        nb = nbformat.read(output, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and any(call in cell.source for call in CHECKED):
                cell.source = cell.source.replace("# NBVAL_IGNORE_OUTPUT\n", "", 1)
        nbformat.write(nb, output)
    print(f"{notebook.stem}: {time.perf_counter() - start:.0f} s -> {output.relative_to(ROOT)}")
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=["04", "07"], help="notebook prefixes (default 04 07)")
    args = parser.parse_args(argv)
    if not os.environ.get("MRI_SYNTH_DATA"):
        parser.error("set MRI_SYNTH_DATA to the real dataset (../shared/data/alzheimer_mri)")
    profile = load_profile("real")
    for stem in args.only:
        record(stem, profile)


if __name__ == "__main__":
    main()
