"""Where the project keeps things: every folder derived from the project root, each redirected by its variable, and
nothing created until asked."""

from pathlib import Path

import pytest

from mri_synth import paths

FOLDERS = [(paths.cache_dir, "MRI_SYNTH_CACHE", Path(".cache")),
           (paths.results_dir, "MRI_SYNTH_RESULTS", Path("results")),
           (paths.figures_dir, "MRI_SYNTH_FIGURES", Path("runs/figures")),
           (paths.runs_dir, "MRI_SYNTH_RUNS", Path("runs"))]


def test_the_project_root_holds_the_project():
    assert (paths.PROJECT_ROOT / "pyproject.toml").is_file() and (paths.PROJECT_ROOT / "mri_synth").is_dir()
    assert paths.PROJECT_ROOT == Path(paths.__file__).resolve().parent.parent
    assert paths.SAMPLE_DIR == paths.PROJECT_ROOT / "data" / "sample" and (paths.SAMPLE_DIR / "train").is_dir()
    assert paths.HUB_DATASET_ID == "Falah/Alzheimer_MRI"


@pytest.mark.parametrize("folder, variable, default", FOLDERS, ids=[f[1] for f in FOLDERS])
def test_each_folder_has_a_default_and_a_variable_that_moves_it(folder, variable, default, tmp_path, monkeypatch):
    monkeypatch.delenv(variable, raising=False)
    assert folder() == paths.PROJECT_ROOT / default
    monkeypatch.setenv(variable, str(tmp_path / "moved"))
    assert folder() == tmp_path / "moved" and not (tmp_path / "moved").exists()  # nothing made unless asked
    assert folder(ensure=True) == tmp_path / "moved" and (tmp_path / "moved").is_dir()
    monkeypatch.setenv(variable, "")  # an empty variable is no redirection
    assert folder() == paths.PROJECT_ROOT / default
    monkeypatch.setenv(variable, "~/somewhere")
    assert folder() == Path.home() / "somewhere"


def test_the_default_source_is_the_variable_or_the_hub(monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_DATA", "sample")
    assert paths.default_source() == "sample"
    monkeypatch.delenv("MRI_SYNTH_DATA")
    assert paths.default_source() == "Falah/Alzheimer_MRI"
    monkeypatch.setenv("MRI_SYNTH_DATA", "")
    assert paths.default_source() == "Falah/Alzheimer_MRI"


def test_relative_paths_start_at_the_project_root_wherever_the_caller_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a notebook runs in notebooks/, the batch elsewhere: the same folder either way
    assert paths.project_path("figures") == paths.PROJECT_ROOT / "figures"
    assert paths.project_path(Path("benchmarks/results")) == paths.PROJECT_ROOT / "benchmarks" / "results"
    assert paths.project_path(tmp_path / "abs") == tmp_path / "abs"
    assert paths.project_path("~/x") == Path.home() / "x"


def test_chosen_dir_takes_the_named_folder_or_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_RESULTS", str(tmp_path / "default"))
    assert paths.chosen_dir("", paths.results_dir) == tmp_path / "default" and (tmp_path / "default").is_dir()
    assert paths.chosen_dir(None, paths.results_dir, ensure=False) == tmp_path / "default"
    named = paths.chosen_dir(str(tmp_path / "named" / "deep"), paths.results_dir)
    assert named == tmp_path / "named" / "deep" and named.is_dir()
    assert paths.chosen_dir(str(tmp_path / "not-made"), paths.results_dir, ensure=False) == tmp_path / "not-made"
    assert not (tmp_path / "not-made").exists()
