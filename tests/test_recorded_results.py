"""The recorded results under ``benchmarks/results``: every folder's tables agree with the trial files beside them.

``results.parquet`` and ``history.parquet`` are what notebooks and readers open; the trial files are the record.
A table written by a run that saw only part of the folder (the thesis-budget tables once held 1 of 40 trials) fails
here until ``mri-synth tables <folder>`` rewrites it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import benchmark_scripts  # tests/ is on sys.path (conftest.py)
import pandas as pd
import pytest

from mri_synth.study.runner import load_results, write_tables

ROOT = Path(__file__).resolve().parents[1]
RECORDED = sorted({p.parent.parent for p in (ROOT / "benchmarks" / "results").rglob("trials/*.json")})


def _canonical(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    table = table[sorted(table.columns)]
    return table.sort_values(by).reset_index(drop=True)


def disagreements(folder: Path) -> list[str]:
    """How a results folder's tables differ from its trial files (empty when they agree)."""
    results, history = load_results(folder)
    found = []
    for name, fresh, by in (("results.parquet", results, ["trial_key", "metric"]),
                            ("history.parquet", history, ["trial_key", "metric", "epoch", "step"])):
        path = folder / name
        if not path.exists():
            found.append(f"{name} is missing")
            continue
        stored = pd.read_parquet(path)
        if set(stored.trial_key) != set(fresh.trial_key):
            counts = stored.trial_key.nunique(), fresh.trial_key.nunique()
            found.append(f"{name} holds {counts[0]} trials, the trial files {counts[1]}")
            continue
        try:
            pd.testing.assert_frame_equal(_canonical(stored, by), _canonical(fresh, by), check_dtype=False)
        except AssertionError as err:
            found.append(f"{name} differs from the trial files: {str(err).splitlines()[0]}")
    return found


def test_every_recorded_study_folder_is_found():
    names = {str(p.relative_to(ROOT)) for p in RECORDED}
    assert {"benchmarks/results/real/results/cnn", "benchmarks/results/real/thesis_budget/cnn"} <= names


@pytest.mark.parametrize("folder", RECORDED, ids=lambda p: str(p.relative_to(ROOT)))
def test_tables_agree_with_their_trial_files(folder):
    assert disagreements(folder) == []


def test_a_table_missing_trials_or_holding_other_values_is_caught(tmp_path):
    folder = tmp_path / "study"
    source = ROOT / "benchmarks" / "results" / "tuning" / "slice"
    shutil.copytree(source / "trials", folder / "trials")
    results, _ = write_tables(folder)
    assert disagreements(folder) == []
    first = results.trial_key.iloc[0]
    results[results.trial_key == first].to_parquet(folder / "results.parquet")  # a table of one trial
    assert disagreements(folder) == [f"results.parquet holds 1 trials, the trial files {results.trial_key.nunique()}"]
    changed = results.copy()
    changed.loc[changed.metric == "test_loss", "value"] += 0.01
    changed.to_parquet(folder / "results.parquet")
    assert disagreements(folder)[0].startswith("results.parquet differs from the trial files")


@pytest.mark.parametrize("table", sorted((ROOT / "benchmarks" / "results").rglob("source_fidelity.csv")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_source_fidelity_rows_name_recorded_trials(table):
    """Figure 7.3's table (benchmarks/source_fidelity.py) measures trials that are recorded beside it."""
    rows = pd.read_csv(table)
    keys = {p.stem for p in table.parent.rglob("trials/*.json")}
    assert len(rows) and set(rows.trial_key) <= keys
    assert rows.trial_key.is_unique and rows.fd.gt(0).all() and rows.label_fidelity.between(0, 1).all()


@pytest.mark.parametrize(("profile", "folder"), [("rerun", "benchmarks/results/rerun/results"),
                                                  ("real", "benchmarks/results/real/results")])
def test_every_recorded_trial_is_one_its_notebook_plans(profile, folder):
    # the recorded notebooks read these trials; a trial outside the plan (another batch size, budget or arm) would
    # mean the notebook, re-run, trains its own instead of reading them
    from mri_synth.notebooks import profile_study
    archs = sorted(p.name for p in (ROOT / folder).iterdir() if (p / "trials").is_dir())
    assert archs
    for arch in archs:
        planned = {s.key for s in profile_study(profile, arch).specs}
        recorded = {p.stem for p in (ROOT / folder / arch / "trials").glob("*.json")}
        assert recorded and recorded <= planned, (arch, sorted(recorded - planned)[:3])


@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny"])
def test_the_rerun_profile_freezes_what_the_tuning_record_chose(arch):
    # benchmarks/arch_tuning.sh's declared rule, applied to the committed tuning tables: at the profile's input size,
    # the best validation score among the (lr, budget) pairs whose optimum lies inside the budget (best_at < 1), the
    # shorter budget on a tie. The trials of issue 24 run at what the profile says, so the two must not drift apart.
    from mri_synth.notebooks import profile_study
    study = profile_study("rerun", arch)
    assert not study.pretrained and len(study.specs) == 80  # from scratch; 4 arms x 2 evaluations x 10 repeats
    for split in ("slice", "subject"):
        table = pd.read_csv(ROOT / "benchmarks/results/tuning" / arch / split / f"tuning_{split}.csv")
        table = table[(table.input_size == study.input_size) & (table.best_at < 1)]
        lowest_first = table.criterion.iloc[0] == "val_loss"
        best = table.sort_values(["score", "epochs"], ascending=[lowest_first, True]).iloc[0]
        spec = next(s for s in study.specs if s.split == split)
        assert (spec.lr, spec.epochs) == (pytest.approx(best.lr), best.epochs), (arch, split)


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "vit_tiny"])
def test_every_rerun_repeat_ran_its_arms_on_one_machine(arch):
    # the rerun's contrasts pair the arms of one repeat; its machines may differ between repeats (a session's CPU is
    # drawn for it: the ViT-Tiny's repeats ran on two kinds), never within one
    from mri_synth.analysis.findings import mixed_repeats
    from mri_synth.study.runner import trial_machines
    machines = trial_machines(ROOT / "benchmarks/results/rerun/results" / arch)
    assert len(machines) and (machines.machine != "").all() and (machines.torch == "2.14.1").all()
    assert mixed_repeats(machines, arch) == []


def test_the_same_trial_on_the_other_machine_reads_its_recorded_twin(tmp_path):
    # benchmarks/same_trial_here.py: the repeat's other arms are staged so only the chosen trial trains, and the
    # committed comparison's first column is the recorded trial's own readouts
    script = benchmark_scripts.load("same_trial_here")
    folder = ROOT / "benchmarks/results/rerun/results/vit_tiny"
    recorded = script.stage(folder, tmp_path, "subject", 0, "30% real")
    staged = [json.loads(p.read_text())["columns"] for p in (tmp_path / "trials").glob("*.json")]
    assert sorted(c["policy"] for c in staged) == ["100% real", "30% real + 70% diffusion", "30% real + autoaugment"]
    assert {(c["split"], c["seed"]) for c in staged} == {("subject", 0)} and len(list(tmp_path.rglob("*.npz"))) == 3
    assert recorded["columns"]["policy"] == "30% real"
    with pytest.raises(ValueError, match="no recorded trial of subject repeat 0, arm '10% real'"):
        script.stage(folder, tmp_path, "subject", 0, "10% real")
    lines = (ROOT / "benchmarks/results/rerun/same_trial_vit_tiny_subject0.txt").read_text().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in script.READOUTS}
    assert {m: float(v[0]) for m, v in rows.items()} == {m: pytest.approx(recorded["metrics"][m], abs=5e-5)
                                                           for m in script.READOUTS}
    twin = {**recorded, "metrics": {**recorded["metrics"], "test_loss": recorded["metrics"]["test_loss"] + 0.5}}
    assert script.compare(recorded, twin)[1].endswith("+0.5000")


def test_the_measured_grid_cost_says_what_the_trial_files_do(tmp_path):
    # benchmarks/grid_cpu_hours.py: the README's measured CPU-hours of issue 24's trials, from the trial files
    script = benchmark_scripts.load("grid_cpu_hours")
    recorded = (ROOT / "benchmarks/results/rerun/grid_cpu_hours.txt").read_text()
    assert "\n".join(script.report(script.RECORDED)) + "\n" == recorded
    # recorded trials of both CPUs copied (two on one, one on the other): the sums are the files' own
    by_cpu = {}
    for path in sorted((script.RECORDED / "vit_tiny" / "trials").glob("*.json")):
        by_cpu.setdefault(json.loads(path.read_text())["provenance"]["cpu"], []).append(path)
    (amd, *_), (intel_1, intel_2, *_) = by_cpu["AMD EPYC"], by_cpu["Intel(R) Xeon(R) Processor"]
    (tmp_path / "vit_tiny" / "trials").mkdir(parents=True)
    for path in (amd, intel_1, intel_2):
        for part in (path, path.with_suffix(".npz")):
            shutil.copy(part, tmp_path / "vit_tiny" / "trials" / part.name)
    hours = {p: json.loads(p.read_text())["metrics"]["train_time_s"] / 3600 for p in (amd, intel_1, intel_2)}
    *_, per_arch, together = script.report(tmp_path, ("vit_tiny",))
    assert per_arch == (f"vit_tiny: 3 trials, {sum(hours.values()):.1f} CPU-h (AMD EPYC {hours[amd]:.1f} for 1, "
                        f"Intel(R) Xeon(R) Processor {hours[intel_1] + hours[intel_2]:.1f} for 2)")
    assert together.startswith(f"together: 3 trials, {sum(hours.values()):.1f} CPU-h against issue 24's 25")
    with pytest.raises(SystemExit, match="no trial files under .*resnet18/trials"):
        script.report(tmp_path, ("resnet18",))
