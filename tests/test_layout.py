"""The package's shape: imports run one way between its parts, with no cycle, and no module grows past 400 lines.

Every import of a project module is counted, at module level, inside functions and under ``TYPE_CHECKING``; the
standard library's ``ast`` reads them, so nothing is imported to check. The direction (A <- B: B may import A):
``data`` <- ``training`` <- ``study`` <- ``chapters`` / ``cli``; ``synth`` uses ``data`` only; ``analysis`` uses
``data`` and reads results tables, never the training loop; ``paths`` is read by every part.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mri_synth"
MAX_LINES = 400

LAYER_OF_TOP = {"paths": "paths", "config": "config", "cli": "entry", "notebooks": "entry"}
MAY_IMPORT = {
    "paths": set(),
    "data": {"paths"},
    "training": {"paths", "data"},
    "synth": {"paths", "data"},
    "study": {"paths", "data", "training", "synth"},
    "analysis": {"paths", "data"},
    "config": {"paths", "data"},
    "chapters": {"paths", "data", "training", "synth", "study", "analysis", "config"},
    "entry": {"paths", "data", "training", "synth", "study", "analysis", "config", "chapters", "entry"},
}
"""Which other parts each part may import (its own part aside)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return "package" if len(parts) == 1 else LAYER_OF_TOP.get(parts[1], parts[1])


def imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import of a project module in ``path``."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                targets = ["<relative>"]
            else:
                base = node.module or ""
                # "from mri_synth.synth import registry" imports the module mri_synth.synth.registry
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found += [(t, node.lineno, id(node) in inside) for t in targets
                  if t == "<relative>" or t.split(".")[0] == "mri_synth"]
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: {t for t, _, _ in imports(path, set(found)) if t in found and t != name}
            for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def wrong_direction(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in edges.items():
        for target in targets:
            a, b = layer(source), layer(target)
            if a != b and b != "package" and b not in MAY_IMPORT.get(a, set()):
                bad.append(f"{source} ({a}) imports {target} ({b})")
    return sorted(bad)


def test_no_import_cycle_counting_function_level_and_type_checking_imports():
    assert find_cycle(graph()) is None


def test_imports_run_one_way_between_the_parts():
    assert wrong_direction(graph()) == []


def test_the_checks_catch_a_cycle_and_a_wrong_direction():
    # the checker on a made-up graph: a training module that reads the study, and a two-module cycle
    edges = {"mri_synth.training.fit": {"mri_synth.study.trials"}, "mri_synth.study.trials": {"mri_synth.training.fit"},
             "mri_synth.analysis.stats": {"mri_synth.data.types"}}
    assert find_cycle(edges) in (["mri_synth.study.trials", "mri_synth.training.fit", "mri_synth.study.trials"],
                                 ["mri_synth.training.fit", "mri_synth.study.trials", "mri_synth.training.fit"])
    assert wrong_direction(edges) == ["mri_synth.training.fit (training) imports mri_synth.study.trials (study)"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_function_level_imports_are_found(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mri_synth.data import types\n"
                      "def f():\n    from mri_synth.training import fit\n    from . import x\n")
    found = imports(module, {"mri_synth.data.types", "mri_synth.training.fit"})
    assert found == [("mri_synth.data.types", 3, False), ("mri_synth.training.fit", 5, True), ("<relative>", 6, True)]


@pytest.mark.parametrize("name", sorted(modules()))
def test_one_import_style_at_module_level(name):
    """Absolute imports at module level; a project import inside a function only where it says why (``# lazy:``)."""
    path = modules()[name]
    lines = path.read_text().splitlines()
    for target, line, in_function in imports(path, set(modules())):
        assert target != "<relative>", f"{name}:{line}: a relative import; write it absolute (from mri_synth...)"
        if in_function:
            assert "# lazy:" in lines[line - 1], (f"{name}:{line}: imports {target} inside a function; import it at "
                                                  "module level, or say why it is lazy with a '# lazy:' comment")


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_past_400_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it where its parts separate"


def test_every_part_is_a_subpackage_and_only_the_entry_points_stay_flat():
    flat = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert flat == ["cli", "config", "notebooks", "paths"]
    parts = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert parts == ["analysis", "chapters", "data", "study", "synth", "training"]


def test_notebooks_import_only_the_chapter_modules():
    import json

    root = PACKAGE.parent
    for notebook in sorted([*root.glob("notebooks/[0-9][0-9]_*.ipynb"), *root.glob("benchmarks/results/real/*.ipynb")]):
        cells = json.loads(notebook.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith(("%", "!"))))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    for target in names:
                        if target.startswith("mri_synth"):
                            assert target.startswith("mri_synth.chapters."), f"{notebook.name} imports {target}"


TESTS = Path(__file__).resolve().parent
CROSS_CUTTING = {"test_layout.py", "test_packaging.py", "test_cuda.py", "test_gpu_check.py", "test_real_study_gpu.py",
                 "test_cost_model.py", "test_committed_notebooks.py", "test_recorded_results.py",
                 "test_source_fidelity.py", "test_record_notebooks.py", "test_arch_trial_cost.py",
                 "test_rerun_script.py"}
"""Top-level test files about the project rather than one module: its shape, its set-up files, the GPU checks, the
benchmarks' scripts and what is committed (the notebooks' stored outputs, the recorded results)."""


def mirror_of(module: str) -> Path:
    """Where a module's tests live: ``mri_synth/training/fit.py`` -> ``tests/training/test_fit.py``,
    ``mri_synth/cli.py`` -> ``tests/test_cli.py``."""
    *folders, name = module.split(".")[1:]
    return TESTS.joinpath(*folders, f"test_{name}.py")


def test_every_module_has_its_test_file_named_after_it():
    missing = [f"{name}: {mirror_of(name).relative_to(TESTS.parent)}" for name, path in modules().items()
               if path.name != "__init__.py" and not mirror_of(name).is_file()]
    assert missing == [], "modules without a test file of their name (write one there):\n" + "\n".join(missing)


def test_every_test_file_names_a_module_or_the_project():
    # a module renamed or split leaves no test file behind under its old name
    known = {mirror_of(name) for name, path in modules().items() if path.name != "__init__.py"}
    stray = [str(p.relative_to(TESTS.parent)) for p in sorted(TESTS.rglob("test_*.py"))
             if p not in known and not (p.parent == TESTS and p.name in CROSS_CUTTING)]
    assert stray == [], "test files that mirror no module of mri_synth (move or rename them):\n" + "\n".join(stray)
    assert not list(TESTS.rglob("__init__.py"))  # importlib mode: test folders are no packages


def test_the_mirror_rule_on_made_up_names():
    assert mirror_of("mri_synth.training.fit") == TESTS / "training" / "test_fit.py"
    assert mirror_of("mri_synth.cli") == TESTS / "test_cli.py"
    assert mirror_of("mri_synth.chapters.gradcam") != mirror_of("mri_synth.training.gradcam")
