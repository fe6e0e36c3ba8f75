"""Stacked trials in the runner: which trials share a step, and a grouped run's table equals the one-at-a-time one.

The grouped path is forced on the CPU here (``run_study(stack=True)``; by default it runs on CUDA only). Tolerance:
the stacked one (``tests/training/test_stacked.py``, fp32): counts, steps and the chosen checkpoints are equal, losses,
AUCs and calibration agree to 1e-4 absolute (stored probabilities are float16: 1e-3).
"""

import json
import platform

import numpy as np
import pandas as pd
import pytest

from mri_synth.study import runner as R
from mri_synth.study import trial
from mri_synth.study import trial_groups as G
from mri_synth.study import trials as S

TINY = dict(epochs=1, equal_steps=True, batch_size=32, input_size=32, precision="fp32")  # paths compared in fp32
COUNTED = ("accuracy", "balanced_accuracy", "macro_f1", "steps", "best_step", "train_images", "real_images",
           "synthetic_images")


@pytest.fixture(scope="module")
def context(sample_data, tmp_path_factory):
    return trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"),
                          generator_root=tmp_path_factory.mktemp("generators"), device="cpu", cpu_threads=1)


def _grid():
    return S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat", "autoaugment@0.3"], range(2), **TINY)


def test_plan_groups_stacks_trials_that_share_a_step_and_leaves_the_rest_alone(context):
    specs = _grid()
    epochs_budget = S.TrialSpec(real_fraction=0.3, epochs=1, batch_size=32)
    other_lr = S.TrialSpec(real_fraction=0.3, lr=1e-4, **TINY)
    subject = S.TrialSpec(real_fraction=0.3, split="subject", seed=1, **TINY)
    groups = G.plan_groups([*specs, epochs_budget, other_lr, subject], context, max_models=4)
    assert [len(g) for g in groups] == [4, 4, 1, 1, 1]  # 8 equal-step cnn trials in stacks of 4, three alone
    assert [g[0] for g in groups[2:]] == [epochs_budget, other_lr, subject]
    assert sorted(s.key for g in groups for s in g) == sorted(s.key for s in [*specs, epochs_budget, other_lr, subject])
    # by default, stacks as large as an architecture fits: 32 CNNs, 8 ResNet-18s, ViTs one at a time
    many = {arch: S.study_grid([arch], [1.0, 0.3], ["none", "repeat"], range(12), **TINY)
            for arch in ("resnet18", "vit")}
    assert [len(g) for g in G.plan_groups(many["resnet18"], context)] == [8, 8, 8, 8, 4]
    assert {len(g) for g in G.plan_groups(many["vit"], context)} == {1}
    assert [len(g) for g in G.plan_groups(specs * 5, context)] == [32, 8]
    with pytest.raises(ValueError, match="max_models must be >= 1"):
        G.plan_groups(specs, context, max_models=0)


def test_a_group_that_cannot_share_a_step_is_refused(context):
    from mri_synth.training.stacked import StackingError

    with pytest.raises(StackingError, match="cannot share a step"):
        G.run_trial_group([S.TrialSpec(real_fraction=0.3, **TINY), S.TrialSpec(real_fraction=0.3, lr=1e-4, **TINY)],
                          context)


def test_grouped_runner_table_equals_the_one_at_a_time_table(context, tmp_path, monkeypatch):
    specs = _grid()
    alone, alone_history = R.run_study(specs, context, tmp_path / "alone", progress=False)
    ran_alone = []
    real_run_trial = trial.run_trial
    monkeypatch.setattr(trial, "run_trial", lambda spec, ctx: ran_alone.append(spec) or real_run_trial(spec, ctx))
    grouped, grouped_history = R.run_study(specs, context, tmp_path / "grouped", progress=False, stack=True,
                                           max_stack=8)
    assert ran_alone == []  # every trial trained in the stack
    stored = json.loads((tmp_path / "grouped" / "trials" / f"{specs[0].key}.json").read_text())
    assert stored["provenance"]["stacked"] == len(specs)
    assert stored["provenance"]["machine"] == platform.machine()  # where it ran (a GPU's name on CUDA)
    # the same form: the same trials, metrics and columns in the same order
    keys = [c for c in alone.columns if c != "value"]
    pd.testing.assert_frame_equal(alone[keys], grouped[keys])
    values = alone.assign(grouped=grouped.value)
    values = values[~values.metric.str.endswith("_time_s")]
    counted = values[values.metric.isin(COUNTED)]
    assert counted.value.tolist() == counted.grouped.tolist()
    np.testing.assert_allclose(values.grouped, values.value, atol=1e-4, rtol=0, equal_nan=True)
    assert set(values.metric) >= {"test_loss", "dementia_auc", "test_loss_last", "best_step"}
    # predictions are stored for every grouped trial, as for a lone one
    for spec in specs:
        a, b = R.load_predictions(tmp_path / "alone", spec.key), R.load_predictions(tmp_path / "grouped", spec.key)
        assert (a["test_ids"] == b["test_ids"]).all()
        np.testing.assert_allclose(a["proba_best"].astype(float), b["proba_best"].astype(float), atol=1e-3)
    assert len(alone_history) == len(grouped_history)
