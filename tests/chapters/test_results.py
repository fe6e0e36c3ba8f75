"""Notebook 07: its config, every architecture's results read from one folder, the exploratory family (labelled and
Holm-corrected on its own) and the thesis-budget rows' folder."""

import json

import numpy as np
import pandas as pd
import pytest

from mri_synth.analysis.contrasts import paired_contrasts
from mri_synth.chapters import results as R
from mri_synth.config import NotebookConfig


def paired_rows() -> pd.DataFrame:
    """Ten repeats of three arms at 30% real and one at 100%: the diffusion arm is lower than 30% real in every pair,
    the repeat arm higher."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 10)
    arms = {"30% real": (0.3, base), "30% real + 70% diffusion": (0.3, base - 0.01 * (np.arange(10) + 1)),
            "30% real + 70% repeat": (0.3, base + 0.1 + 0.001 * np.arange(10)), "100% real": (1.0, base - 0.05)}
    rows = []
    for policy, (fraction, values) in arms.items():
        for seed, value in enumerate(values):
            rows.append({"arch": "cnn", "policy": policy, "real_fraction": fraction, "metric": "test_loss",
                         "value": float(value), "seed": seed, "synthetic": "none", "synthetic_fraction": 0.0,
                         "synthetic_classes": "all", "augment": "none", "epochs": 10, "trial_key": f"{policy}/{seed}"})
    return pd.DataFrame(rows)


def test_results_config_defaults_and_checks():
    config = R.ResultsConfig()
    assert isinstance(config, NotebookConfig)
    assert (config.reference, config.real_fraction, config.alpha, config.thesis_budget_dir) == ("30% real", 0.3,
                                                                                               0.05, "")
    assert config.contrasts[0] == "30% real + 70% diffusion vs 30% real" and len(config.contrasts) == 3
    assert R.ResultsConfig(contrasts=["A vs B"], real_fraction=1).contrasts == ("A vs B",)  # a list from a profile
    assert isinstance(R.ResultsConfig(real_fraction=1).real_fraction, float)
    with pytest.raises(ValueError, match="contrasts must be a list"):
        R.ResultsConfig(contrasts="A vs B")
    with pytest.raises(ValueError, match="alpha must be a number, got '0.05'"):
        R.ResultsConfig(alpha="0.05")
    assert {"reference", "contrasts", "thesis_budget_dir"} <= set(R.ResultsConfig.parameter_names())


def test_exploratory_contrasts_are_every_arm_against_the_reference_in_their_own_family():
    table = paired_rows()
    config = R.ResultsConfig()
    result = R.exploratory_contrasts(table, config)
    assert sorted(result.a) == ["30% real + 70% diffusion", "30% real + 70% repeat"]  # 100% real: another fraction
    assert set(result.b) == {"30% real"} and set(result.family) == {"exploratory"}
    rows = result.set_index("a")
    assert rows.loc["30% real + 70% diffusion", "a_better_share"] == 1.0
    assert rows.loc["30% real + 70% repeat", "a_better_share"] == 0.0
    assert rows.p_value.tolist() == pytest.approx([2 / 2**10] * 2)  # every pair one way: the exact test's floor
    assert rows.p_holm.tolist() == pytest.approx([2 * 2 / 2**10] * 2)  # Holm over its own two contrasts
    declared = paired_contrasts(table, ["30% real + 70% diffusion vs 30% real"], "test_loss")
    assert declared.family.tolist() == ["declared"] and declared.p_holm.iloc[0] == pytest.approx(2 / 2**10)
    with pytest.raises(ValueError, match="nothing to compare with the reference '100% real'"):  # alone at 100%
        R.exploratory_contrasts(table, R.ResultsConfig(real_fraction=1.0, reference="100% real"))


def test_exploratory_contrasts_name_a_missing_reference():
    with pytest.raises(ValueError, match=r"no rows of policy \['30% real \+ basic'\]"):
        R.exploratory_contrasts(paired_rows(), R.ResultsConfig(reference="30% real + basic"))


def test_thesis_budget_results_none_without_a_folder_and_empty_before_any_trial(tmp_path):
    assert R.thesis_budget_results(R.ResultsConfig()) is None
    missing = R.thesis_budget_results(R.ResultsConfig(thesis_budget_dir=str(tmp_path / "nowhere")))
    assert isinstance(missing, pd.DataFrame) and missing.empty


def test_the_recorded_thesis_budget_rows_are_read(tmp_path):
    from mri_synth import paths

    recorded = paths.PROJECT_ROOT / "benchmarks" / "results" / "real" / "thesis_budget"
    if not (recorded / "cnn" / "trials").is_dir():
        pytest.skip("the recorded thesis-budget rows are not in this checkout")
    rows = R.thesis_budget_results(R.ResultsConfig(thesis_budget_dir="benchmarks/results/real/thesis_budget"))
    files = list((recorded / "cnn" / "trials").glob("*.json"))
    assert set(rows.trial_key) == {p.stem for p in files} and set(rows.arch) == {"cnn"}
    assert set(rows.budget) == {json.loads(files[0].read_text())["columns"]["budget"]}


def test_load_all_results_says_what_to_run_when_the_folder_is_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no trial results under {tmp_path}: run notebooks 04-06"):
        R.load_all_results(str(tmp_path))
    assert not (tmp_path / "figures").exists()  # reading makes no folder


def test_load_all_results_reads_the_named_architectures_only():
    # the rerun's folder holds the basic CNN's grid and the other architectures' first trials: notebook 07 can show the
    # finished ones; an architecture with no trials there (ViT-B/16, `vit`) is named in the error
    from mri_synth import paths

    folder = paths.PROJECT_ROOT / "benchmarks/results/rerun/results"
    every, every_history = R.load_all_results(str(folder))
    assert {"cnn", "resnet18"} <= set(every.arch)
    cnn, history = R.load_all_results(str(folder), ["cnn"])
    assert set(cnn.arch) == {"cnn"} and set(history.arch) == {"cnn"}
    assert set(cnn.trial_key) == set(every.trial_key[every.arch == "cnn"])
    assert len(history) == (every_history.arch == "cnn").sum()
    with pytest.raises(FileNotFoundError, match=r"no trials of \['vit'\] under .* leave them out of the "
                                                r"architectures parameter"):
        R.load_all_results(str(folder), ["cnn", "vit"])
    assert R.ResultsConfig(architectures=["cnn"]).architectures == ("cnn",)


def test_the_notebook_gets_what_it_shows():
    assert set(R.__all__) <= set(dir(R)) and "exploratory_contrasts" in R.__all__ and "ResultsConfig" in R.__all__


def test_the_diagnostic_family_is_corrected_on_its_own_and_says_when_it_cannot_run(capsys):
    rows = [{"arch": "cnn", "split": "slice", "policy": p, "seed": s, "metric": "test_loss", "value": v + 0.01 * s,
             "real_fraction": 0.3, "trial_key": f"{p}{s}"}
            for p, v in (("30% real + 70% reconstruct_own", 0.8), ("30% real + 70% repeat", 0.7)) for s in range(6)]
    results = pd.DataFrame(rows)
    assert R.diagnostic_family(results, R.ResultsConfig()) is None
    assert "no diagnostic contrasts declared" in capsys.readouterr().out
    family = ("30% real + 70% reconstruct_own vs 30% real + 70% repeat",
              "30% real + 70% reconstruct_other vs 100% real")
    table = R.diagnostic_family(results, R.ResultsConfig(diagnostic_contrasts=family))
    assert len(table) == 1 and table.mean_diff.iloc[0] == pytest.approx(0.1) and (table.family == "declared").all()
    assert R.diagnostic_family(results[results.policy == "30% real + 70% repeat"],
                               R.ResultsConfig(diagnostic_contrasts=family)) is None
    assert "has both arms recorded yet" in capsys.readouterr().out


def test_figure_7_3_is_shown_from_the_named_fidelity_table_or_said_to_be_missing(tmp_path, capsys):
    rows = [{"trial_key": f"k{s}", "arch": "cnn", "split": "slice", "metric": "test_loss", "value": 0.5 + s / 100}
            for s in range(3)]
    fidelity = tmp_path / "fidelity.csv"
    pd.DataFrame([{"trial_key": f"k{s}", "split": "slice", "source": "repeat", "fd": 1.0 + s, "label_fidelity": 0.9,
                   "psnr": float("nan"), "ssim": float("nan")} for s in range(3)]).to_csv(fidelity, index=False)
    assert R.show_outcome_against_fd(pd.DataFrame(rows), R.ResultsConfig(figures_dir=str(tmp_path))) is None
    assert "no source fidelity table named" in capsys.readouterr().out
    table = R.show_outcome_against_fd(pd.DataFrame(rows), R.ResultsConfig(figures_dir=str(tmp_path),
                                                                           source_fidelity=str(fidelity)))
    assert (tmp_path / "07_outcome_against_fd.png").exists() and (tmp_path / "07_outcome_against_fd.pdf").exists()
    row = table.loc[("slice", "repeat")]  # the figure as a table: no blur, no new content
    assert (row.blur, row["new content"], row.repeats, row.FD) == ("no", "no", 3, 2.0)
    assert row["median [interval]"] == "0.510 [0.500, 0.520]"
    assert row.readout.startswith("slice: four-way test cross-entropy")
