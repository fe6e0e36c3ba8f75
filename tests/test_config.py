"""The notebooks' configs: strict types with a message naming the parameter, folders from the project root."""

from dataclasses import dataclass

import pytest

from mri_synth.chapters.training import ArchitectureStudy
from mri_synth.config import NotebookConfig


def test_config_checks_types_and_names_the_parameter():
    with pytest.raises(ValueError, match="epochs must be an int, got '10'"):
        ArchitectureStudy.from_params({"epochs": "10"})
    with pytest.raises(ValueError, match="n_seeds must be an int, got True"):
        ArchitectureStudy(n_seeds=True)
    with pytest.raises(ValueError, match="real_fractions must be a list"):
        ArchitectureStudy(real_fractions="0.3")
    config = ArchitectureStudy.from_params({"real_fractions": [1, 0.3], "weight_decay": 1, "unrelated": object()})
    assert config.real_fractions == (1.0, 0.3) and isinstance(config.weight_decay, float)
    with pytest.raises(ValueError, match=r"lr must be in \(0, 1\), got 1.0"):  # the settings' own check
        ArchitectureStudy.from_params({"lr": 1})


def test_relative_folders_start_at_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = NotebookConfig(figures_dir="runs/test-figures-dir")
    from mri_synth import paths

    assert config.figures == paths.PROJECT_ROOT / "runs" / "test-figures-dir"
    config.figures.rmdir()


@dataclass(frozen=True)
class Example(NotebookConfig):
    """A notebook's config with one field of each kind the notebooks declare."""

    fractions: tuple[float, ...] = (1.0, 0.3)
    names: tuple[str, ...] = ("a",)
    steps: int | None = None
    strength: float = 0.5
    label: str = "x"
    flag: bool = False


def test_the_shared_fields_and_their_defaults():
    config = NotebookConfig()
    assert (config.data_source, config.seed, config.device, config.cpu_threads, config.figures_dir,
            config.results_dir) == ("sample", 0, "auto", 0, "", "")
    assert NotebookConfig.parameter_names() == ("data_source", "seed", "device", "cpu_threads", "figures_dir",
                                                "results_dir")
    assert Example.parameter_names()[-6:] == ("fractions", "names", "steps", "strength", "label", "flag")


def test_values_become_the_declared_types():
    config = Example(fractions=[1, 0.5], names=["b", "c"], steps=None, strength=1)
    assert config.fractions == (1.0, 0.5) and all(isinstance(f, float) for f in config.fractions)
    assert config.names == ("b", "c") and config.steps is None
    assert config.strength == 1.0 and isinstance(config.strength, float)
    assert Example(steps=5).steps == 5


@pytest.mark.parametrize("bad, message", [
    (dict(fractions="1.0"), r"fractions must be a list, e.g. \[1.0, 0.3\]; got '1.0'"),
    (dict(fractions=0.3), "fractions must be a list"),
    (dict(fractions=[1.0, "0.3"]), r"fractions\[1\] must be a number, got '0.3' \(str\); fix the notebook's "
                                   "parameters cell or the profile"),
    (dict(names=["a", 1]), r"names\[1\] must be a str, got 1 \(int\)"),
    (dict(steps=2.5), r"steps must be an int, got 2.5 \(float\)"),
    (dict(steps=True), r"steps must be an int, got True \(bool\)"),
    (dict(strength=True), r"strength must be a number, got True \(bool\)"),
    (dict(label=3), r"label must be a str, got 3 \(int\)"),
    (dict(flag="yes"), r"flag must be a bool, got 'yes' \(str\)"),
    (dict(seed="0"), r"seed must be an int, got '0' \(str\)"),
    (dict(cpu_threads=-1), r"cpu_threads must be >= 0 \(0 keeps torch's default\), got -1"),
])
def test_wrong_types_are_refused_naming_the_parameter(bad, message):
    with pytest.raises(ValueError, match=message):
        Example(**bad)


def test_from_params_takes_the_configs_fields_only():
    namespace = {"seed": 3, "label": "y", "In": [], "get_ipython": print, "epochs": "ignored"}
    config = Example.from_params(namespace)
    assert (config.seed, config.label, config.fractions) == (3, "y", (1.0, 0.3))


def test_folders_are_made_where_named_or_by_default(tmp_path, monkeypatch):
    config = NotebookConfig(figures_dir=str(tmp_path / "figs"), results_dir=str(tmp_path / "tables"))
    assert config.figures == tmp_path / "figs" and (tmp_path / "figs").is_dir()
    assert config.results == tmp_path / "tables" and (tmp_path / "tables").is_dir()
    monkeypatch.setenv("MRI_SYNTH_FIGURES", str(tmp_path / "env-figures"))
    monkeypatch.setenv("MRI_SYNTH_RESULTS", str(tmp_path / "env-results"))
    assert NotebookConfig().figures == tmp_path / "env-figures" and (tmp_path / "env-figures").is_dir()
    assert NotebookConfig().results == tmp_path / "env-results" and (tmp_path / "env-results").is_dir()


def test_load_data_reads_the_named_source(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    data = NotebookConfig(data_source="sample").load_data()
    assert data.train.class_counts() == [47, 49, 75, 52] and data.test.class_counts() == [17, 15, 21, 12]
