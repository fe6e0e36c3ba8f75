"""The notebook batch: profiles, the parameters each notebook receives, and a real papermill run."""

import json
import os
import platform

import nbformat
import papermill
import pytest

from mri_synth import notebooks as N


def test_every_notebook_has_a_fully_parsed_parameters_cell():
    for nb_path in N.numbered_notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, f"{nb_path.name}: needs exactly one cell tagged 'parameters'"
        assignments = [ln for ln in cells[0].source.splitlines() if ln and not ln.startswith("#")]
        parsed = papermill.inspect_notebook(str(nb_path))
        # papermill silently drops a line it cannot parse (e.g. '=' inside a comment): the batch would not set it
        assert len(parsed) == len(assignments), f"{nb_path.name}: papermill parsed {list(parsed)} of {assignments}"
        assert all(p["help"] for p in parsed.values()), f"{nb_path.name}: every parameter needs a why-comment"
        assert "figures_dir" in parsed and "data_source" in parsed


CONFIGS = {"ExplorationConfig": "mri_synth.chapters.exploration", "GenerationConfig": "mri_synth.chapters.generation",
           "GradCamConfig": "mri_synth.chapters.gradcam", "ArchitectureStudy": "mri_synth.chapters.training",
           "ResultsConfig": "mri_synth.chapters.results"}


def _config_class(nb_path):
    import importlib
    import re

    source = "\n".join(c.source for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code")
    calls = re.findall(r"config = (\w+)\.from_params\(globals\(\)\)", source)
    assert len(calls) == 1, f"{nb_path.name}: its config cell must be one call, Config.from_params(globals())"
    return getattr(importlib.import_module(CONFIGS[calls[0]]), calls[0])


def test_each_notebook_declares_only_its_configs_fields_and_builds_it_in_one_call():
    for nb_path in N.numbered_notebooks():
        config = _config_class(nb_path)
        declared = set(papermill.inspect_notebook(str(nb_path)))
        assert declared <= set(config.parameter_names()), \
            f"{nb_path.name} declares {sorted(declared - set(config.parameter_names()))}, unknown to {config.__name__}"


def test_notebook_defaults_are_the_quick_profile():
    # running a notebook as it is (nbval, JupyterLab) does what the quick profile's batch does
    profile = N.load_profile("quick")
    for nb_path in N.numbered_notebooks():
        defaults = {k: v["default"] for k, v in papermill.inspect_notebook(str(nb_path)).items()}
        wanted = {**profile["common"], **profile["notebooks"].get(nb_path.stem, {})}
        for key, value in wanted.items():
            if key in defaults:
                assert eval(defaults[key]) == value, f"{nb_path.name}: {key} = {defaults[key]}, quick profile {value!r}"


def test_profiles_name_only_existing_notebooks():
    for profile in N.PROFILE_DIR.glob("*.yaml"):
        loaded = N.load_profile(profile)
        assert loaded["common"]["data_source"] is not None


@pytest.mark.parametrize("profile", sorted(p.stem for p in N.PROFILE_DIR.glob("*.yaml")))
def test_each_profile_builds_notebook_02s_generator_from_its_own_preset(tmp_path, profile):
    # what notebook 02 runs with: its parameters cell, then what the batch injects. Its defaults (32 px, 120
    # steps) are the pixel quick preset's overrides; a profile naming another preset must reset them (0), or the
    # latent presets fail (no image_size) and the pixel gpu preset silently shrinks to 32 px and 120 steps
    from mri_synth.chapters.generation import GenerationConfig
    from mri_synth.synth import registry

    nb = N.NOTEBOOK_DIR / "02_synthetic_generation.ipynb"
    defaults = {k: eval(v["default"]) for k, v in papermill.inspect_notebook(str(nb)).items()}
    params = {**defaults, **N.notebook_parameters(N.load_profile(profile), nb, tmp_path)}
    config = GenerationConfig.from_params(params)
    label = registry.get("diffusion").label(config.generator_settings())
    if config.diffusion_preset != defaults["diffusion_preset"]:
        assert label == config.diffusion_preset, f"{profile}: notebook 02 runs {label}"


@pytest.mark.parametrize("profile", sorted(p.stem for p in N.PROFILE_DIR.glob("*.yaml")))
@pytest.mark.parametrize("stem", sorted(N.ARCH_NOTEBOOKS))
def test_profile_study_plans_the_trials_the_training_notebook_runs(profile, stem):
    # the notebook as papermill runs it: its parameters cell, then the injected cell, executed; then the one call
    # that builds its study. mri-synth study --profile, the cost model and the recording of a notebook all plan with
    # profile_study: a parameter the profile leaves to the notebook's default (rerun's batch size once) must not
    # make them plan other trials than the notebook (recording notebook 05 trained a batch-32 trial that way)
    from papermill.parameterize import parameterize_notebook

    from mri_synth.chapters.training import ArchitectureStudy

    loaded = N.load_profile(profile)
    path = N.NOTEBOOK_DIR / f"{stem}.ipynb"
    nb = parameterize_notebook(nbformat.read(path, as_version=4),
                               N.notebook_parameters(loaded, path, N.paths.runs_dir() / profile))
    namespace = {}
    for cell in nb.cells:
        if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
            exec(cell.source, namespace)
    built = ArchitectureStudy.from_params(namespace)
    planned = N.profile_study(profile, built.arch)
    assert [s.key for s in planned.specs] == [s.key for s in built.specs], (profile, stem)
    assert planned.results == built.results


def test_profile_study_names_the_architectures_a_profile_trains():
    assert N.profile_study("rerun", "vit_tiny").arch == "vit_tiny"  # 06's section names its model
    with pytest.raises(ValueError, match="trains no 'vit'.*cnn, resnet18, vit_tiny"):
        N.profile_study("rerun", "vit")


def test_notebooks_as_they_are_and_the_quick_profile_never_train_the_default_latent_cpu_preset():
    # the registry's default is the 18-CPU-minute latent-cpu preset: nbval, make study and CI must name a fast one
    from mri_synth.synth import registry

    fast = ("toy", "small", "quick", "latent-toy")
    assert registry.DEFAULT_DIFFUSION_PRESET not in fast
    quick = N.load_profile("quick")
    for nb_path in N.numbered_notebooks():
        declared = papermill.inspect_notebook(str(nb_path))
        if "diffusion_preset" not in _config_class(nb_path).parameter_names():
            continue
        assert "diffusion_preset" in declared, f"{nb_path.name} would run the registry's default preset"
        wanted = {**quick["common"], **quick["notebooks"].get(nb_path.stem, {})}
        default = eval(declared["diffusion_preset"]["default"])  # what nbval and JupyterLab run
        for preset in (default, wanted.get("diffusion_preset", default)):
            assert preset in fast, f"{nb_path.name}: {preset}"


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(N.ProfileError, match="quick"):
        N.load_profile("no_such_profile")


@pytest.mark.parametrize("text, message", [
    ("common: {seed: 1}\nnotebooks:\n  01_data_exploraton: {}\n", "01_data_exploraton.*names no notebook"),
    ("comon: {seed: 1}\n", "comon"),
    # a key no notebook declares would silently run the wrong study: refused, naming the key and the parameters
    ("common: {n_seed: 3}\n", "'n_seed' is declared by no notebook.*n_seeds"),
    ("notebooks:\n  01_data_exploration: {epochs: 3}\n", "'epochs' of section '01_data_exploration' is not declared"),
])
def test_a_profile_with_a_misspelt_section_or_key_is_refused(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(N.ProfileError, match=message):
        N.load_profile(bad)


def test_a_notebook_receives_only_what_it_declares(tmp_path):
    profile = {"common": {"seed": 5, "data_source": "sample", "epochs": 3}, "notebooks": {}}
    nb = N.NOTEBOOK_DIR / "01_data_exploration.ipynb"
    params = N.notebook_parameters(profile, nb, tmp_path)
    assert params["seed"] == 5 and params["figures_dir"] == str(tmp_path / "figures")
    assert "epochs" not in params  # notebook 01 trains nothing


def test_batch_runs_notebook_01_into_the_run_folder(tmp_path):
    runs = N.run_batch("quick", run_dir=tmp_path, only=["01"])
    assert [r.notebook for r in runs] == ["01_data_exploration"]
    executed = nbformat.read(tmp_path / "01_data_exploration.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(tmp_path / "figures") in injected[0].source
    outputs = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "Moderate_Demented" in outputs and "Error" not in outputs
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        f"01_{name}.{suffix}" for name in ("example_slices", "intensity_histograms", "nearest_train_similarity",
                                           "person_slices") for suffix in ("pdf", "png")]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap setting is glibc's (a no-op elsewhere)")
def test_batch_kernels_keep_freed_memory(tmp_path, monkeypatch):
    # papermill runs a notebook in a kernel process of its own: mallopt in this process does not reach it, the
    # environment does. The kernel counts the page faults of allocating and freeing a 64 MiB tensor (as
    # tests/training/test_heap.py does): 16,384 with the default allocator, 0 with freed memory kept.
    cell = ("import json, resource, statistics, torch\n"
            "faults = []\n"
            "for _ in range(19):\n"
            "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    torch.empty(16 * 2**20).fill_(1.0)\n"
            "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
            "print(json.dumps({'faults': statistics.median(faults[12:])}))")
    notebook = tmp_path / "nb" / "01_faults.ipynb"
    notebook.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    monkeypatch.setattr(N, "numbered_notebooks", lambda directory=None: [notebook])
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    (tmp_path / "empty.yaml").write_text("common: {}\n")
    [run] = N.run_batch(tmp_path / "empty.yaml", run_dir=tmp_path / "run")
    printed = nbformat.read(run.output, as_version=4).cells[0].outputs[0]["text"]
    assert json.loads(printed)["faults"] == 0
    assert "GLIBC_TUNABLES" not in os.environ  # only the kernels got it
