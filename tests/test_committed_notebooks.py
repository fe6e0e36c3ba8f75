"""Every notebook in the repository, as committed: executed, its figures inline, no machine's paths in its outputs.

These read the stored outputs (nothing is executed): the notebooks under ``notebooks/`` and every recorded one under
``benchmarks/results/``. nbval, in ``make test``, re-executes the ones whose numbers it compares.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "index.ipynb"


def committed_notebooks() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=False)
    found = [ROOT / line for line in listed.stdout.splitlines() if line]
    # outside a git checkout (an sdist), every notebook in the tree
    return sorted(found) if found else sorted(p for p in ROOT.rglob("*.ipynb")
                                              if ".venv" not in p.parts and ".ipynb_checkpoints" not in p.parts)


NOTEBOOKS = committed_notebooks()
FIGURE_CALL = re.compile(r"(?<![\w.])(show_figure|save_figure)\(")
# a path of the machine a notebook ran on: a pathlib repr, or an absolute path under a home, work or temp folder
MACHINE_PATH = re.compile(r"(?:Posix|Windows)Path\(|(?<![\w.:/])/(?:work|home|tmp|Users|root|private|var/folders|mnt)/"
                          r"|[A-Za-z]:\\\\?Users")


def _texts(output) -> list[str]:
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    if output.get("output_type") == "error":
        return ["\n".join(output.get("traceback", []))]
    data = output.get("data", {})
    return [v if isinstance(v, str) else "".join(v) for k, v in data.items() if k.startswith("text/")]


def _code_cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]


def problems(path: Path) -> list[str]:
    """What is wrong with one committed notebook's stored outputs (empty when nothing is)."""
    found = []
    for i, cell in _code_cells(path):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} cell {i}"
        if cell.get("execution_count") is None:
            found.append(f"{where}: never executed")
        outputs = cell.get("outputs", [])
        shows_figure = any(t.startswith("<Figure size") for o in outputs for t in _texts(o))
        images = sum("image/png" in o.get("data", {}) for o in outputs)
        if FIGURE_CALL.search(cell.source) or shows_figure:
            if not images:
                found.append(f"{where}: makes a figure but shows none")
        calls = len(re.findall(r"(?<![\w.])show_figure\(", cell.source))
        if calls and "for " not in cell.source and images > calls:  # pyplot kept the figure open: shown twice
            found.append(f"{where}: shows {images} images for {calls} show_figure call(s)")
        for output in outputs:
            for text in _texts(output):
                match = MACHINE_PATH.search(text)
                if match:
                    shown = text[max(match.start() - 20, 0):match.end() + 40]
                    found.append(f"{where}: prints a machine path ({shown!r})")
                if output.get("output_type") == "error":
                    found.append(f"{where}: stored an error")
    return found


def test_the_repository_has_its_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_data_exploration.ipynb", "07_results.ipynb", "index.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_notebook_is_executed_with_figures_inline_and_no_machine_paths(path):
    assert problems(path) == []


def _write(tmp_path, cells) -> Path:
    nb = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def _code(source, outputs=(), count=1):
    cell = nbformat.v4.new_code_cell(source, execution_count=count)
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


PNG = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo=",
                                                                 "text/plain": "<Figure size 640x480 with 1 Axes>"}}


def test_problems_finds_an_unexecuted_cell(tmp_path):
    path = _write(tmp_path, [_code("x = 1", count=None), _code("y = 2")])
    assert problems(path) == [f"{path} cell 0: never executed"]


def test_problems_finds_a_figure_shown_twice(tmp_path):
    path = _write(tmp_path, [_code('show_figure(fig, "a", config.figures)', [PNG, PNG])])
    assert problems(path) == [f"{path} cell 0: shows 2 images for 1 show_figure call(s)"]


def test_problems_finds_a_figure_cell_without_an_image(tmp_path):
    saved_only = {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                  "data": {"text/plain": "<Figure size 640x480 with 1 Axes>"}}
    path = _write(tmp_path, [_code('show_figure(fig, "a", config.figures)'), _code("fig", [saved_only]),
                             _code('show_figure(fig, "b", config.figures)', [PNG])])
    assert problems(path) == [f"{path} cell 0: makes a figure but shows none",
                              f"{path} cell 1: makes a figure but shows none"]


@pytest.mark.parametrize("text", ["[PosixPath('/work/main/figures/07_loss.png')]", "wrote /home/ann/mri/figures/a.png",
                                  "cache in /tmp/tmpab12/cache"])
def test_problems_finds_a_machine_path(tmp_path, text):
    stream = {"output_type": "stream", "name": "stdout", "text": text}
    path = _write(tmp_path, [_code("print(where)", [stream])])
    assert len(problems(path)) == 1 and "machine path" in problems(path)[0]


def test_problems_accepts_relative_paths_and_stored_figures(tmp_path):
    stream = {"output_type": "stream", "name": "stdout", "text": "figures/07_loss.png and runs/real/results, 3/4 done"}
    path = _write(tmp_path, [nbformat.v4.new_markdown_cell("# title"), _code("print(where)", [stream]),
                             _code('show_figure(fig, "b", config.figures)', [PNG])])
    assert problems(path) == []


def test_index_links_only_files_that_exist():
    text = "\n".join(c.source for c in nbformat.read(INDEX, as_version=4).cells)
    links = re.findall(r"\]\(([^)#]+)", text)
    assert len(links) >= 20  # every thesis figure and table, quick profile and real data
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert missing == []
