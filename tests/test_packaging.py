"""The set-up files agree: environment.yml installs exactly what pyproject.toml declares, nothing on the side."""

import re
import tomllib
from importlib import metadata

import yaml
from packaging.requirements import Requirement

from mri_synth import paths

PYPROJECT = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((paths.PROJECT_ROOT / "environment.yml").read_text())
TOOLS_NOT_PACKAGES = {"python", "pip", "make"}


def _conda_names():
    return [re.split(r"[=<>! ]", d)[0] for d in ENV["dependencies"] if isinstance(d, str)]


def test_environment_python_matches_requires_python():
    python = next(d for d in ENV["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = python.split("=", 1)[1]
    assert f">={version}" in PYPROJECT["project"]["requires-python"]


def test_environment_installs_the_project_itself_and_nothing_else_by_pip():
    pip_section = next(d["pip"] for d in ENV["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[test]"], "environment.yml must install the project (pyproject.toml is the source of truth)"
    makefile = (paths.PROJECT_ROOT / "Makefile").read_text()
    assert "install --quiet -e '.[test]'" in makefile  # the Makefile's venv gets the same extra


def test_no_dependency_is_declared_twice():
    declared = {Requirement(r).name.lower() for r in PYPROJECT["project"]["dependencies"]}
    extra = set(_conda_names()) - TOOLS_NOT_PACKAGES
    assert not extra, f"environment.yml lists packages beside pyproject.toml: {extra}; move them to pyproject.toml"
    assert {"torch", "torchvision", "timm", "datasets", "openai", "grad-cam", "diffusers", "papermill"} <= declared


def test_installed_packages_satisfy_pyproject():
    for spec in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"]:
        req = Requirement(spec)
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} does not satisfy {spec}"
