"""The set-up files agree: pyproject.toml's bounds admit the Pythons and torch versions the code works with,
constraints.txt pins the versions the study was measured with, environment.yml and the Makefile install through
both, and the Makefile finds a Python >= 3.11 by itself."""

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from mri_synth import paths

ROOT = paths.PROJECT_ROOT
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())
TOOLS_NOT_PACKAGES = {"python", "pip", "make"}
DECLARED = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]
            + PYPROJECT["project"]["optional-dependencies"]["test"]
            + PYPROJECT["project"]["optional-dependencies"]["ray"]]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _conda_names():
    return [re.split(r"[=<>! ]", d)[0] for d in ENV["dependencies"] if isinstance(d, str)]


def test_python_3_11_and_every_newer_python_may_install():
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert all(requires.contains(v) for v in ("3.11.0", "3.12.1", "3.13.0", "3.14.0"))
    assert not requires.contains("3.10.12")
    python = next(d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert requires.contains(python.split("=", 1)[1])  # conda's Python is one pyproject admits


def test_torch_bounds_admit_the_versions_the_code_works_with():
    bounds = {r.name: r.specifier for r in DECLARED}
    assert bounds["torch"].contains("2.4.0") and bounds["torch"].contains("2.14.1")
    assert not bounds["torch"].contains("2.3.1")  # no fused Adam on the CPU before 2.4
    assert bounds["torchvision"].contains("0.19.0") and bounds["torchvision"].contains("0.29.1")


def test_constraints_pin_the_measured_versions_within_the_bounds():
    pins = _pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "mri-synth" not in pins  # the project itself is installed from the clone
    for req in DECLARED:
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"pin {name}=={pins[name]} breaks {req}"


def test_environment_and_makefile_install_the_project_with_the_constraints():
    pip_section = next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-c constraints.txt", "-e .[test,ray]"], \
        "environment.yml must install the project (pyproject.toml is the source of truth) with constraints.txt"
    makefile = (ROOT / "Makefile").read_text()
    # hence CI (.ci/run: make test) too; the ray extra so that CI runs the study on a local Ray
    assert "install --quiet -c constraints.txt -e '.[test,ray]'" in makefile


def test_no_dependency_is_declared_twice():
    declared = {r.name.lower() for r in DECLARED}
    extra = set(_conda_names()) - TOOLS_NOT_PACKAGES
    assert not extra, f"environment.yml lists packages beside pyproject.toml: {extra}; move them to pyproject.toml"
    assert {"torch", "torchvision", "timm", "datasets", "openai", "grad-cam", "diffusers", "papermill"} <= declared


def test_installed_packages_satisfy_pyproject():
    for req in DECLARED:
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} does not satisfy {req}"


def _fake_python(folder, name: str, runs: bool) -> None:
    """A stand-in: one that runs is this interpreter (>= 3.11); one that does not is like an unselected pyenv shim."""
    path = folder / name
    path.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n" if runs else "#!/bin/sh\nexit 127\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("present, chosen", [
    ({"python3.13": False, "python3.12": True, "python3.11": True, "python3": True}, "python3.12"),
    ({"python3.11": False, "python3": True}, "python3"),
    ({"python3.13": False, "python3": False}, None),
])
def test_makefile_takes_the_first_python_that_runs_and_is_new_enough(tmp_path, present, chosen):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, runs in present.items():
        _fake_python(bin_dir, name, runs)
    venv = tmp_path / "venv"
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("PYTHON", None)
    # -n prints the set-up commands; the venv line runs only for real, so the last case runs it (and fails early)
    dry_run = ["-n"] if chosen else []
    done = subprocess.run([shutil.which("make"), "-C", str(ROOT), *dry_run, "setup", f"VENV={venv}"], env=env,
                          capture_output=True, text=True, timeout=60)
    if chosen:
        assert f'echo "{chosen} -m venv {venv}"' in done.stdout, done.stdout + done.stderr
    else:
        assert done.returncode != 0 and "no Python >= 3.11 found" in done.stderr and not venv.exists()
