"""Trials: spec keys, the synthetic-mix policy (only the trial's own sources), the control arm, the resumable runner."""

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch

from mri_synth.data.sampling import stratified_sample
from mri_synth.data.types import CLASS_NAMES
from mri_synth.study import runner as R
from mri_synth.study import trial
from mri_synth.study import trials as S
from mri_synth.synth import registry


@pytest.fixture(scope="module")
def context(sample_data, tmp_path_factory):
    return trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"),
                          generator_root=tmp_path_factory.mktemp("generators"))


# ------------------------------------------------------------------------------------------------ specs


def test_key_is_stable_and_content_addressed():
    spec = S.TrialSpec(arch="cnn", real_fraction=0.3, synthetic="diffusion", synthetic_fraction=0.7, seed=4,
                       generator="quick")
    assert spec.key == S.TrialSpec(seed=4, synthetic_fraction=0.7, synthetic="diffusion", real_fraction=0.3,
                                   generator="quick").key
    # a golden value: a key that silently changed would orphan every finished trial of a running study (this one
    # was the default label's until the default became latent-cpu: a trial that named quick keeps its key)
    assert spec.key == "c444c51db70c2d85"
    # a diffusion arm that names no preset carries the registry's default: other images, so another key
    default = replace(spec, generator="")
    assert default.generator == registry.DEFAULT_DIFFUSION_PRESET and default.key != spec.key
    # arms without a generator carry no generator label: the diffusion preset does not change their keys
    plain = S.TrialSpec(real_fraction=0.3, seed=4)
    assert plain.key == replace(plain, generator="toy").key == S.TrialSpec(real_fraction=0.3, seed=4, generator="gpu").key
    assert plain.key == "263f847324b8a8e1"
    for change in [dict(seed=5), dict(real_fraction=0.4), dict(augment="basic"), dict(max_steps=100),
                   dict(synthetic_classes=("Moderate_Demented",))]:
        assert replace(spec, **change).key != spec.key
    # class order does not matter: the classes are a set
    a = replace(spec, synthetic_classes=("Moderate_Demented", "Mild_Demented"))
    assert a.key == replace(spec, synthetic_classes=("Mild_Demented", "Moderate_Demented")).key


@pytest.mark.parametrize("bad, message", [
    (dict(real_fraction=0), r"real_fraction must be a number in \(0, 1\]"),
    (dict(synthetic="dalle"), "synthetic must be one of"),
    (dict(synthetic="diffusion"), "use synthetic='none' exactly when nothing is added"),
    (dict(augment="cutmix"), "augment must be one of"),
    (dict(synthetic="repeat", synthetic_fraction=0.7, synthetic_classes=("Severe",)), "unknown synthetic_classes"),
])
def test_bad_specs_are_refused_with_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        S.TrialSpec(**bad)


def test_grid_pairs_arms_and_skips_empty_fills():
    grid = S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat", "diffusion:Mild_Demented,Moderate_Demented",
                                              "diffusion+autoaugment"], range(3), epochs=2)
    labels = {s.policy for s in grid}
    assert "100% real + 0% repeat" not in labels and "100% real" in labels
    assert {"30% real + 70% repeat", "30% real + 70% diffusion (Mild+Moderate)",
            "30% real + 70% diffusion + autoaugment"} <= labels
    assert len(grid) == 3 * (1 + 4) and len({s.key for s in grid}) == len(grid)
    only = S.study_grid(["cnn"], [1.0, 0.3], ["none", "autoaugment@0.3"], [0])
    assert [s.policy for s in only] == ["100% real", "30% real", "30% real + autoaugment"]
    with pytest.raises(ValueError, match="unknown arm part 'dalle2'"):
        S.study_grid(["cnn"], [0.3], ["dalle2"], [0])


# ------------------------------------------------------------------------------------------------ training sets


def test_synthetic_amount_per_class_follows_the_full_set():
    counts = [724, 49, 2566, 1781]
    spec = S.TrialSpec(real_fraction=0.3, synthetic="repeat", synthetic_fraction=0.7)
    assert trial.synthetic_per_class(spec, counts) == [507, 34, 1796, 1247]
    only = replace(spec, synthetic_classes=("Mild_Demented", "Moderate_Demented"))
    assert trial.synthetic_per_class(only, counts) == [507, 34, 0, 0]


def test_control_arm_repeats_only_the_trials_own_images(context):
    spec = S.TrialSpec(real_fraction=0.3, synthetic="repeat", synthetic_fraction=0.7, seed=2)
    ts = trial.training_set(spec, context)
    full = context.evaluation(spec).pool  # the training slices left after the validation carve
    assert set(ts.synthetic_sources) <= set(ts.real_ids)
    # the real part is the stratified sample (half rounds up: 30% of 75 is 23, where Python's round gives 22)
    assert len(ts.labels) == len(stratified_sample(full.labels, 0.3, 2)) + sum(
        trial.synthetic_per_class(spec, full.class_counts()))
    assert ts.labels.bincount(minlength=4).tolist() == [
        r + s for r, s in zip(torch.bincount(full.labels[stratified_sample(full.labels, 0.3, 2)], minlength=4).tolist(),
                              trial.synthetic_per_class(spec, full.class_counts()))]


def test_every_policy_of_a_repeat_shares_the_real_subset(context):
    base = S.TrialSpec(real_fraction=0.3, seed=1)
    plain = trial.training_set(base, context)
    control = trial.training_set(replace(base, synthetic="repeat", synthetic_fraction=0.7), context)
    augmented = trial.training_set(replace(base, augment="autoaugment"), context)
    assert plain.real_ids == control.real_ids == augmented.real_ids
    assert plain.real_ids != trial.training_set(replace(base, seed=2), context).real_ids


def test_diffusion_draw_uses_only_variants_of_the_trials_own_sources(context):
    spec = S.TrialSpec(real_fraction=0.3, synthetic="diffusion", synthetic_fraction=0.2, seed=0, generator="toy",
                       synthetic_classes=("Moderate_Demented", "Mild_Demented"))
    ts = trial.training_set(spec, context)
    assert ts.synthetic_sources and set(ts.synthetic_sources) <= set(ts.real_ids)
    n_real = len(ts.real_ids)
    added = ts.labels[n_real:]
    assert set(added.tolist()) <= {CLASS_NAMES.index("Mild_Demented"), CLASS_NAMES.index("Moderate_Demented")}
    assert ts.images.shape[1:] == (1, 128, 128) and ts.images.dtype == torch.uint8
    # another repeat has another real subset, hence a generator trained on other images and other sources
    other = trial.training_set(replace(spec, seed=1), context)
    assert other.generator_fingerprint != ts.generator_fingerprint
    assert set(other.synthetic_sources) <= set(other.real_ids)


def test_paid_generator_is_only_read_from_the_bank_with_a_clear_error(context):
    spec = S.TrialSpec(real_fraction=0.3, synthetic="openai", synthetic_fraction=0.7)
    with pytest.raises(ValueError, match="fill it first"):
        trial.training_set(spec, context)


# ------------------------------------------------------------------------------------------------ the runner

TINY = dict(epochs=1, batch_size=32)


def _grid():
    return S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat"], range(2), **TINY)


def _stable(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.metric != "train_time_s"].reset_index(drop=True)


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
    assert set(history.metric) >= {"test_loss", "accuracy", "ece"} and (tmp_path / "resumed" / "results.parquet").exists()


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
    assert images["synthetic_images"] == sum(trial.synthetic_per_class(spec, context.evaluation(spec).pool.class_counts()))
    stored = R.load_predictions(tmp_path, spec.key)  # per-image test probabilities, at both checkpoints
    assert stored["proba_best"].shape == (len(context.data.test), 4) and list(stored["test_ids"]) == list(
        context.data.test.ids)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["data_fingerprint"] == context.data.fingerprint and "torch" in prov["versions"]


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


def test_subject_trials_never_train_or_validate_on_a_test_person(sample_data, tmp_path_factory):
    context = trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"))
    spec = S.TrialSpec(split="subject", seed=3, **TINY)
    ev = context.evaluation(spec)
    ts = trial.training_set(spec, context)
    person = dict(zip(ev.pool.ids + ev.validation.ids + ev.test.ids,
                      torch.cat([ev.pool.groups, ev.validation.groups, ev.test.groups]).tolist()))
    trained, validated, tested = ({person[i] for i in ids} for i in [0] for ids in
                                  (ts.real_ids, ev.validation.ids, ev.test.ids))
    assert tested and not (tested & trained) and not (tested & validated) and not (validated & trained)
    assert spec.fold == 3 and trial.selection_criterion(spec) == "val_dementia_auc"
    metrics = trial.run_trial(spec, context)["metrics"]
    assert metrics["people"] == len(tested) and 0 <= metrics["person_accuracy"] <= 1


def test_the_baseline_is_tuned_on_validation_only(context, tmp_path):
    from mri_synth.study.tuning import tune_baseline

    table = tune_baseline(context, tmp_path, lrs=(1e-3, 1e-2), weight_decays=(0.0,), epochs=(1,), batch_size=32,
                          progress=False)
    assert list(table.lr) == sorted(table.lr, key=lambda lr: table.set_index("lr").score[lr])  # lowest loss first
    assert table.chosen.tolist() == [True, False] and (tmp_path / "tuning_slice.csv").exists()
    results, _ = R.load_results(tmp_path)
    val = results[results.metric == "val_loss"].groupby("lr").value.mean()
    assert table.score.tolist() == pytest.approx(val.loc[table.lr].tolist())
