"""The resumable runner: same table after a kill, provenance, budgets, reuse of older trial files."""

import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from mri_synth.data.types import CLASS_NAMES
from mri_synth.study import runner as R
from mri_synth.study import trial
from mri_synth.study import trials as S


@pytest.fixture(scope="module")
def context(sample_data, tmp_path_factory):
    return trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"),
                          generator_root=tmp_path_factory.mktemp("generators"))


TINY = dict(epochs=1, batch_size=32)


def _grid():
    return S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat"], range(2), **TINY)


def _stable(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table.metric.str.endswith("_time_s")].reset_index(drop=True)


def test_resume_after_a_kill_gives_the_same_table(context, tmp_path, monkeypatch):
    specs = _grid()
    straight, _ = R.run_study(specs, context, tmp_path / "straight", progress=False)

    calls = {"n": 0}
    real_run_trial = trial.run_trial

    def dies_on_the_third(spec, ctx):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_run_trial(spec, ctx)

    monkeypatch.setattr(trial, "run_trial", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        R.run_study(specs, context, tmp_path / "resumed", progress=False)
    assert len(list((tmp_path / "resumed" / "trials").glob("*.json"))) == 2
    monkeypatch.setattr(trial, "run_trial", real_run_trial)

    ran = []
    monkeypatch.setattr(trial, "run_trial", lambda spec, ctx: ran.append(spec.key) or real_run_trial(spec, ctx))
    resumed, history = R.run_study(specs, context, tmp_path / "resumed", progress=False)
    assert len(ran) == len(specs) - 2  # the two finished trials were not run again
    pd.testing.assert_frame_equal(_stable(resumed), _stable(straight))
    assert set(history.metric) >= {"test_loss", "accuracy", "ece"}
    assert (tmp_path / "resumed" / "results.parquet").exists()


def test_results_carry_spec_provenance_and_every_metric(context, tmp_path):
    spec = S.TrialSpec(real_fraction=0.3, synthetic="repeat", synthetic_fraction=0.7, **TINY)
    results, _ = R.run_study([spec], context, tmp_path, progress=False)
    metrics = set(results.metric)
    assert {"test_loss", "test_loss_last", "accuracy", "balanced_accuracy", "macro_f1", "ece", "train_time_s",
            "dementia_auc", "dementia_auc_person", "person_accuracy", "best_step", "steps",
            *(f"recall_{c}" for c in CLASS_NAMES)} <= metrics
    row = results.iloc[0]
    assert row.policy == "30% real + 70% repeat" and row.generator_kind == "control" and row.budget == "epochs"
    images = results.set_index("metric").value
    pool_counts = context.evaluation(spec).pool.class_counts()
    assert images["synthetic_images"] == sum(trial.synthetic_per_class(spec, pool_counts))
    stored = R.load_predictions(tmp_path, spec.key)  # per-image test probabilities, at both checkpoints
    assert stored["proba_best"].shape == (len(context.data.test), 4) and list(stored["test_ids"]) == list(
        context.data.test.ids)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["data_fingerprint"] == context.data.fingerprint and "torch" in prov["versions"]
    # each trial says where it ran: machine, processor, torch, and whether the code was its commit
    where = json.loads((tmp_path / "trials" / f"{spec.key}.json").read_text())["provenance"]
    assert where["torch"] == prov["versions"]["torch"] and where["cpu"] == prov["cpu"] != ""
    assert where["git_commit"] == prov["git_commit"] and where["git_dirty"] == prov["git_dirty"]
    ran = R.trial_machines(tmp_path)  # what the findings block states: the processor here, a GPU by its name
    assert ran[["arch", "split", "seed", "machine", "torch"]].values.tolist() == [
        ["cnn", "slice", 0, prov["cpu"], where["torch"]]]
    trial_file = tmp_path / "trials" / f"{spec.key}.json"
    on_gpu = json.loads(trial_file.read_text())
    on_gpu["provenance"]["machine"] = "NVIDIA H100 80GB HBM3"
    trial_file.write_text(json.dumps(on_gpu))
    assert R.trial_machines(tmp_path).machine.tolist() == ["NVIDIA H100 80GB HBM3"]
    # the classifier's time and the synthetic set's time are apart
    assert images["train_time_s"] > 0 and images["synthesis_time_s"] >= 0


def test_tables_hold_every_trial_of_the_folder_not_only_the_last_grid(context, tmp_path):
    first, second = _grid()[:2], _grid()[2:3]
    R.run_study(first, context, tmp_path, progress=False)
    results, _ = R.run_study(second, context, tmp_path, progress=False)
    assert results.trial_key.nunique() == 1  # what the call returns: its own grid
    table = pd.read_parquet(tmp_path / "results.parquet")  # what the folder's table holds: all three trials
    assert set(table.trial_key) == {s.key for s in first + second}
    history = pd.read_parquet(tmp_path / "history.parquet")
    assert set(history.trial_key) == set(table.trial_key)


def test_recording_refuses_uncommitted_code_and_trains_nothing(context, monkeypatch):
    recorded = R.RECORDED_RESULTS / "never-written-by-a-test"
    dirty = {"git_commit": "abc", "git_dirty": True}
    with pytest.raises(R.RecordingError, match="commit the code first"):
        R.require_clean_code(recorded, dirty)
    with pytest.raises(R.RecordingError, match="no git commit"):
        R.require_clean_code(recorded, {"git_commit": "", "git_dirty": False})
    R.require_clean_code(recorded, {"git_commit": "abc", "git_dirty": False})  # a clean commit records
    R.require_clean_code(R.RECORDED_RESULTS.parent.parent / "runs" / "x", dirty)  # runs/ is not the record

    monkeypatch.setattr(R, "provenance", lambda data: {**dirty, "data_fingerprint": data.fingerprint,
                                                       "data_source": data.source})
    monkeypatch.setattr(trial, "run_trial", lambda spec, ctx: pytest.fail("trained under uncommitted code"))
    try:
        with pytest.raises(R.RecordingError):
            R.run_study(_grid()[:1], context, recorded, progress=False)
    finally:
        shutil.rmtree(recorded, ignore_errors=True)


def test_step_budget_gives_every_arm_the_same_number_of_steps(context, tmp_path):
    specs = S.study_grid(["cnn"], [0.3], ["none", "repeat"], [0], max_steps=6, batch_size=16)
    results, _ = R.run_study(specs, context, tmp_path, progress=False)
    steps = results[results.metric == "steps"].set_index("policy").value
    assert steps.tolist() == [6.0, 6.0] and set(results.budget) == {"steps"}


def test_results_from_other_data_are_not_mixed(context, tmp_path, real_data):
    R.run_study([S.TrialSpec(real_fraction=0.3, **TINY)], context, tmp_path, progress=False)
    other = trial.StudyContext(data=real_data, bank_root=context.bank_root)
    with pytest.raises(ValueError, match="choose another results folder"):
        R.run_study([S.TrialSpec(real_fraction=0.3, **TINY)], other, tmp_path, progress=False)


def test_changing_the_diffusion_preset_reruns_only_diffusion_trials(context, tmp_path, monkeypatch):
    from mri_synth.synth.registry import GeneratorSettings

    def grid(preset):
        return S.study_grid(["cnn"], [0.3], ["none", "repeat", "diffusion"], [0],
                            GeneratorSettings(diffusion_preset=preset), **TINY)

    toy = grid("toy")
    R.run_study(toy, context, tmp_path, progress=False)
    ran = []
    real_run_trial = trial.run_trial
    monkeypatch.setattr(trial, "run_trial", lambda spec, ctx: ran.append(spec) or real_run_trial(spec, ctx))
    tiny = [replace(s, generator="toy:train_steps=3") if s.synthetic == "diffusion" else s for s in toy]
    results, _ = R.run_study(tiny, context, tmp_path, progress=False)
    assert [s.synthetic for s in ran] == ["diffusion"] and ran[0].generator == "toy:train_steps=3"
    assert set(results.generator) == {"", "toy:train_steps=3"}


def test_trial_files_of_the_older_key_scheme_are_reused_not_rerun(context, tmp_path, monkeypatch):
    import hashlib
    from dataclasses import asdict

    spec = S.TrialSpec(real_fraction=0.3, **TINY)
    R.run_study([spec], context, tmp_path, progress=False)
    # rewrite the file as an older version stored it: the diffusion preset in every arm's spec and key
    path = tmp_path / "trials" / f"{spec.key}.json"
    stored = json.loads(path.read_text())
    old_spec = {**asdict(spec), "generator": "toy"}
    old_key = hashlib.sha256(json.dumps(old_spec, sort_keys=True).encode()).hexdigest()[:16]
    path.unlink()
    (tmp_path / "trials" / f"{old_key}.json").write_text(json.dumps({**stored, "spec": old_spec}))
    old_results, _ = R.load_results(tmp_path)  # readable as it is: today's key and columns
    assert set(old_results.trial_key) == {spec.key} and set(old_results.generator) == {""}
    monkeypatch.setattr(trial, "run_trial", lambda *a: pytest.fail("a finished trial was run again"))
    results, _ = R.run_study([spec], context, tmp_path, progress=False)
    assert set(results.trial_key) == {spec.key} and path.exists()


def test_equal_steps_give_arms_of_every_size_the_same_number_of_updates(context, tmp_path):
    # 100% of the pool, 30% (not a multiple of the batch) and 30% + repeat: the optimizer's own step count agrees
    specs = S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat"], [0], epochs=1, batch_size=32, equal_steps=True)
    results, history = R.run_study(specs, context, tmp_path, progress=False)
    pool = len(context.evaluation(specs[0]).pool)
    sizes = results[results.metric == "train_images"].set_index("policy").value
    assert sizes["30% real"] < sizes["100% real"] and sizes["30% real"] % 32 != 0
    steps = results[results.metric == "steps"].set_index("policy").value
    assert set(steps) == {float(-(-pool // 32))} and set(results.budget) == {"equal_steps"}
