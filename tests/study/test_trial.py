"""One trial: its training set (only the trial's own sources), the control arm, subject trials that never see a test
person, its budget, its training settings and what it reports."""

from dataclasses import replace

import pytest
import torch

from mri_synth.data.sampling import stratified_sample
from mri_synth.data.types import CLASS_NAMES
from mri_synth.study import trial
from mri_synth.study import trials as S


@pytest.fixture(scope="module")
def context(sample_data, tmp_path_factory):
    return trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"),
                          generator_root=tmp_path_factory.mktemp("generators"))


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


TINY = dict(epochs=1, batch_size=32)


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


def test_the_step_budget_and_the_selection_criterion():
    assert trial.step_budget(S.TrialSpec(), 1000) is None  # the thesis's epochs of the arm's own set
    assert trial.step_budget(S.TrialSpec(max_steps=40), 1000) == 40
    assert trial.step_budget(S.TrialSpec(epochs=3, equal_steps=True, batch_size=64), 1000) == 3 * 16  # ceil(1000/64)
    assert trial.step_budget(S.TrialSpec(epochs=2, equal_steps=True, batch_size=50), 1000) == 40
    assert trial.selection_criterion(S.TrialSpec()) == "val_loss"
    assert trial.selection_criterion(S.TrialSpec(split="subject")) == "val_dementia_auc"


def test_model_spec_and_train_config_follow_the_spec(context):
    assert trial.model_spec(S.TrialSpec()).input_size == 128
    assert trial.model_spec(S.TrialSpec(input_size=32)).input_size == 32
    spec = S.TrialSpec(real_fraction=0.3, augment="basic", seed=3, lr=3e-4, weight_decay=1e-4, epochs=2,
                       equal_steps=True, batch_size=32, precision="fp32")
    config = trial.train_config(spec, context)
    pool = len(context.evaluation(spec).pool)
    assert config.max_steps == 2 * -(-pool // 32) and not config.equal_steps  # resolved against the 100% pool
    assert (config.augment, config.seed, config.lr, config.weight_decay, config.precision) == (
        "basic", 3, 3e-4, 1e-4, "fp32")
    assert (config.device, config.progress) == (context.device, context.progress)


def test_a_trial_of_the_older_protocol_cannot_run_again(context):
    old = S.TrialSpec(protocol=1)
    with pytest.raises(ValueError, match=f"trial {old.key} was run under protocol 1.*run it as a new trial"):
        context.evaluation(old)


def test_the_evaluation_is_built_once_per_split_and_fold(context):
    first = context.evaluation(S.TrialSpec(seed=0))
    assert context.evaluation(S.TrialSpec(seed=4, real_fraction=0.3)) is first  # slice mode: one fold for all
    subject = context.evaluation(S.TrialSpec(split="subject", seed=1))
    assert subject is not first and context.evaluation(S.TrialSpec(split="subject", seed=6)) is subject  # 6 % 5


def test_test_readouts_hold_the_four_way_metrics_and_the_dementia_readouts(sample_data):
    test = sample_data.test
    proba = torch.nn.functional.one_hot(test.labels, 4).float()
    readouts = trial.test_readouts(proba, test)
    assert readouts["test_loss"] == pytest.approx(0.0, abs=1e-6) and "loss" not in readouts
    assert readouts["accuracy"] == 1.0 and readouts["dementia_auc"] == 1.0 and readouts["dementia_auc_person"] == 1.0
    assert readouts["people"] == len(set(test.groups.tolist())) and readouts["person_accuracy"] == 1.0


TINY_THESIS = dict(epochs=1, batch_size=32, real_fraction=0.3)  # the thesis's budget: epochs of its own images


def test_without_a_validation_carve_the_pool_is_the_whole_split_and_the_last_step_is_reported(context):
    carved = context.evaluation(S.TrialSpec())
    whole = context.evaluation(S.TrialSpec(validation="none"))
    assert len(whole.pool) == len(carved.pool) + len(carved.validation) and len(whole.validation) == 0
    assert set(whole.pool.ids) == set(carved.pool.ids) | set(carved.validation.ids)
    assert whole.test.ids == carved.test.ids  # the same test slices
    outcome = trial.run_trial(S.TrialSpec(validation="none", **TINY_THESIS), context)
    metrics = outcome["metrics"]
    assert metrics["best_step"] == metrics["steps"] and "val_loss" not in metrics
    assert metrics["test_loss"] == metrics["test_loss_last"]


def test_own_validation_is_carved_from_the_trials_own_training_set_and_reported(context, monkeypatch):
    spec = S.TrialSpec(validation="own", **TINY_THESIS)
    seen = {}
    real_fit = trial.fit

    def watching(model, images, labels, *args, validation=None, **kwargs):
        seen["train"], seen["validation"] = len(labels), validation
        return real_fit(model, images, labels, *args, validation=validation, **kwargs)

    monkeypatch.setattr(trial, "fit", watching)
    metrics = trial.run_trial(spec, context)["metrics"]
    own = trial.training_set(spec, context)
    assert seen["train"] + len(seen["validation"][1]) == len(own.labels) == metrics["train_images"]
    assert metrics["own_validation_images"] == len(seen["validation"][1]) > 0
    assert "val_loss" in metrics  # on the trial's own carve, not the protocol's validation set
    assert len(seen["validation"][1]) != len(context.evaluation(spec).validation)


def test_carried_weights_continue_from_the_previous_repeat_in_order(context, tmp_path):
    chained = trial.StudyContext(data=context.data, bank_root=context.bank_root,
                                 generator_root=context.generator_root, carry_root=tmp_path / "carry")
    first, second = (S.TrialSpec(validation="none", carry=True, seed=s, **TINY_THESIS) for s in (0, 1))
    with pytest.raises(ValueError, match="run the chain in order from repeat 0"):
        trial.run_trial(second, chained)
    trial.run_trial(first, chained)
    ended = torch.load(tmp_path / "carry" / f"{first.key}.pt", weights_only=True)
    start = trial.carried_weights(second, chained)
    assert all(torch.equal(start.state_dict()[k], v) for k, v in ended.items())  # repeat 1 starts where 0 ended
    carried = trial.run_trial(second, chained)["metrics"]
    fresh = trial.run_trial(replace(second, carry=False), chained)["metrics"]
    assert carried["test_loss"] != fresh["test_loss"]


def test_validation_modes_are_checked_and_keep_the_recorded_keys():
    with pytest.raises(ValueError, match="validation must be one of"):
        S.TrialSpec(validation="test")
    with pytest.raises(ValueError, match="use it with validation='none'"):
        S.TrialSpec(carry=True)
    spec = S.TrialSpec(real_fraction=0.3)
    assert spec.key == S.TrialSpec(real_fraction=0.3, validation="carved", carry=False).key  # the defaults
    assert len({spec.key, replace(spec, validation="none").key, replace(spec, validation="own").key,
                S.TrialSpec(real_fraction=0.3, validation="none", carry=True).key}) == 4
    assert spec.table_columns()["validation"] == "carved" and spec.table_columns()["carry"] is False


TOY_LATENT = "latent-toy:ae_steps=3,train_steps=2"  # the code path, not the images


@pytest.mark.parametrize("split", ["slice", "subject"])
def test_reconstruction_arms_draw_from_the_subset_or_from_the_rest_of_the_pool(sample_data, split, tmp_path_factory):
    context = trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"),
                                 generator_root=tmp_path_factory.mktemp("generators"), cpu_threads=1)
    base = S.TrialSpec(real_fraction=0.3, synthetic="reconstruct_own", synthetic_fraction=0.7, seed=1, split=split,
                       generator=TOY_LATENT)
    own = trial.training_set(base, context)
    other = trial.training_set(replace(base, synthetic="reconstruct_other"), context)
    ev = context.evaluation(base)
    rest = set(ev.pool.ids) - set(own.real_ids)
    assert own.real_ids == other.real_ids  # the same real subset, as every arm of the repeat
    assert own.synthetic_sources and set(own.synthetic_sources) <= set(own.real_ids)
    # never val or test; the subset only for a class with no other training image (its own reconstructions)
    exhausted = {c for c in range(4) if not any(ev.pool.labels[i] == c for i, s in enumerate(ev.pool.ids) if s in rest)}
    from_subset = set(other.synthetic_sources) - rest
    assert other.synthetic_sources and set(other.synthetic_sources) <= rest | set(own.real_ids)
    assert {int(ev.pool.labels[ev.pool.ids.index(s)]) for s in from_subset} <= exhausted
    assert (split == "slice") == (not exhausted)  # the sample's subject folds exhaust a class: the fallback is tested
    assert other.labels.bincount(minlength=4).tolist() == own.labels.bincount(minlength=4).tolist()
    assert not set(other.synthetic_sources) & (set(ev.test.ids) | set(ev.validation.ids))
    # both through one autoencoder: the subset's, the very generator the diffusion arm of the repeat uses
    assert own.generator_fingerprint == other.generator_fingerprint
    diffusion = trial.training_set(replace(base, synthetic="diffusion"), context)
    assert diffusion.generator_fingerprint != own.generator_fingerprint
    assert len(list(context.generator_root.iterdir())) == 1  # trained once for the three arms
    # the added images are reconstructions: near their sources, not the sources themselves
    pool = dict(zip(ev.pool.ids, ev.pool.images))
    added = other.images[len(other.real_ids):]
    sources = torch.stack([pool[s] for s in other.synthetic_sources])
    assert added.shape == sources.shape and not torch.equal(added, sources)


def test_compiling_is_how_a_trial_runs_not_what_it_is(context):
    spec = S.TrialSpec(real_fraction=0.3)
    compiled = replace(context, compile=True)
    assert trial.train_config(spec, compiled).compile and not trial.train_config(spec, context).compile
    assert "compile" not in spec.key_fields()  # the same trial, the same key
