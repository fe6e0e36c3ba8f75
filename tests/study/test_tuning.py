"""The tuned baseline: settings ranked on validation only."""

import pytest

from mri_synth.study import runner as R
from mri_synth.study import trial


@pytest.fixture(scope="module")
def context(sample_data, tmp_path_factory):
    return trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"),
                          generator_root=tmp_path_factory.mktemp("generators"))


def test_the_baseline_is_tuned_on_validation_only(context, tmp_path):
    from mri_synth.study.tuning import tune_baseline

    table = tune_baseline(context, tmp_path, lrs=(1e-3, 1e-2), weight_decays=(0.0,), epochs=(1,), batch_size=32,
                          progress=False)
    assert list(table.lr) == sorted(table.lr, key=lambda lr: table.set_index("lr").score[lr])  # lowest loss first
    assert table.chosen.tolist() == [True, False] and (tmp_path / "tuning_slice.csv").exists()
    results, _ = R.load_results(tmp_path)
    val = results[results.metric == "val_loss"].groupby("lr").value.mean()
    assert table.score.tolist() == pytest.approx(val.loc[table.lr].tolist())


def test_the_grid_is_the_100_percent_real_arm_at_equal_steps_for_every_setting():
    from mri_synth.study.tuning import baseline_grid

    grid = baseline_grid("cnn", "subject", lrs=(1e-3, 3e-4), weight_decays=(0.0, 1e-4), epochs=(5, 10), seeds=(0, 1),
                         batch_size=32, input_size=64)
    assert len(grid) == 2 * 2 * 2 * 2 and len({s.key for s in grid}) == len(grid)
    assert {s.policy for s in grid} == {"100% real"} and {s.split for s in grid} == {"subject"}
    assert all(s.equal_steps and s.batch_size == 32 and s.input_size == 64 and s.arch == "cnn" for s in grid)
    assert {(s.lr, s.weight_decay, s.epochs, s.seed) for s in grid} == {
        (lr, wd, e, seed) for lr in (1e-3, 3e-4) for wd in (0.0, 1e-4) for e in (5, 10) for seed in (0, 1)}
    assert (grid[0].lr, grid[0].weight_decay, grid[0].epochs, grid[0].seed) == (1e-3, 0.0, 5, 0)  # lr-major order
    assert baseline_grid("cnn", "slice", lrs=(), weight_decays=(0.0,), epochs=(5,), seeds=(0,)) == []
    sizes = baseline_grid("resnet18", "slice", lrs=(1e-3,), weight_decays=(0.0,), epochs=(5,), seeds=(0,),
                          input_sizes=(64, 96, 128))
    assert [s.input_size for s in sizes] == [64, 96, 128] and len({s.key for s in sizes}) == 3


@pytest.mark.parametrize("split, criterion, best_first", [("slice", "val_loss", 3e-4),
                                                         ("subject", "val_dementia_auc", 1e-3)])
def test_the_ranking_follows_the_evaluations_criterion(tmp_path, monkeypatch, split, criterion, best_first):
    import pandas as pd

    from mri_synth.study import tuning

    ran = []

    def fake_run_study(specs, context, results_dir, progress):  # criterion 0.5 at lr 1e-3, 0.3 at 3e-4, per seed
        ran.extend(specs)
        def value(s, metric):
            steps = {"best_step": 10.0 if s.lr == 1e-3 else 5.0 + s.seed, "steps": 10.0}
            return steps.get(metric, (0.5 if s.lr == 1e-3 else 0.3) + 0.01 * s.seed)

        rows = [{"trial_key": s.key, "input_size": s.input_size, "lr": s.lr, "weight_decay": s.weight_decay,
                 "epochs": s.epochs, "metric": m, "value": value(s, m)}
                for s in specs for m in ("val_loss", "val_dementia_auc", "test_loss", "best_step", "steps")]
        return pd.DataFrame(rows), pd.DataFrame()

    monkeypatch.setattr(tuning, "run_study", fake_run_study)
    table = tuning.tune_baseline(None, tmp_path, split=split, lrs=(1e-3, 3e-4), weight_decays=(0.0,), epochs=(2,),
                                 seeds=(0, 1), progress=False, prefix_budgets=False)
    assert len(ran) == 4 and {s.split for s in ran} == {split}
    assert list(table.columns) == ["input_size", "lr", "weight_decay", "epochs", "criterion", "score", "n", "best_at",
                                   "chosen"]
    # where the chosen checkpoint lies in the budget: at its end for lr 1e-3 (a longer budget might do better)
    assert table.set_index("lr").best_at.to_dict() == pytest.approx({1e-3: 1.0, 3e-4: 0.55})
    assert table.lr.tolist()[0] == best_first and table.chosen.tolist() == [True, False]
    assert set(table.criterion) == {criterion} and table.n.tolist() == [2, 2]
    assert sorted(table.score) == pytest.approx([0.305, 0.505])  # the mean over the seeds
    assert pd.read_csv(tmp_path / f"tuning_{split}.csv").lr.tolist() == table.lr.tolist()


@pytest.mark.parametrize("split", ["slice", "subject"])
def test_shorter_budgets_read_from_the_longest_run_equal_their_own_runs(context, tmp_path, split):
    from mri_synth.study.tuning import tune_baseline

    grid = dict(split=split, lrs=(1e-3, 3e-3), weight_decays=(0.0,), epochs=(1, 2, 3), batch_size=32,
                input_size=64, progress=False)
    separate = tune_baseline(context, tmp_path / "separate", prefix_budgets=False, **grid)
    read = tune_baseline(context, tmp_path / "read", **grid)
    assert len(R.load_results(tmp_path / "read")[0].trial_key.unique()) == 2  # one run per lr: the longest
    assert len(R.load_results(tmp_path / "separate")[0].trial_key.unique()) == 6
    assert read[["lr", "epochs", "chosen"]].equals(separate[["lr", "epochs", "chosen"]])
    assert read.score.tolist() == pytest.approx(separate.score.tolist(), abs=1e-6)  # step for step the same run
    assert read.best_at.tolist() == pytest.approx(separate.best_at.tolist())


def test_prefix_readings_choose_the_first_best_point_within_each_budget():
    import pandas as pd

    from mri_synth.study.tuning import prefix_readings

    curve = [0.9, 0.5, 0.4, 0.4, 0.6, 0.3]  # validation loss after each of 6 epochs of 10 steps
    common = {"trial_key": "k", "input_size": 0, "lr": 1e-3, "weight_decay": 0.0, "epochs": 6}
    history = pd.DataFrame([{**common, "metric": "val_loss", "step": 10 * (i + 1), "value": v}
                            for i, v in enumerate(curve)])
    results = pd.DataFrame([{**common, "metric": "steps", "value": 60.0}])
    read = prefix_readings(results, history, "val_loss", (2, 4, 6, 8)).set_index("epochs")
    assert read.val_loss.to_dict() == {2: 0.5, 4: 0.4, 6: 0.3}  # no reading past the run's own budget (8)
    assert read.best_at.to_dict() == pytest.approx({2: 1.0, 4: 30 / 40, 6: 1.0})  # the first of the two 0.4s
    auc = prefix_readings(results, history.assign(metric="val_dementia_auc"), "val_dementia_auc", (4,))
    assert auc.val_dementia_auc.tolist() == [0.9] and auc.best_at.tolist() == [0.25]


def test_a_from_scratch_grid_says_so_in_every_spec_and_the_command_line_asks_for_it():
    from mri_synth import cli
    from mri_synth.study.tuning import baseline_grid

    scratch = baseline_grid("resnet18", "slice", lrs=(1e-3,), weight_decays=(0.0,), epochs=(20,), seeds=(0,),
                            input_sizes=(64, 96), pretrained=False)
    default = baseline_grid("resnet18", "slice", lrs=(1e-3,), weight_decays=(0.0,), epochs=(20,), seeds=(0,),
                            input_sizes=(64, 96))
    assert all(s.pretrained is False for s in scratch) and all(s.pretrained is None for s in default)
    assert {s.key for s in scratch}.isdisjoint(s.key for s in default)  # never read as the pretrained runs
    parser = cli.build_parser()
    assert parser.parse_args(["tune", "--arch", "resnet18", "--from-scratch"]).pretrained is False
    assert parser.parse_args(["tune", "--arch", "resnet18", "--pretrained"]).pretrained is True
    assert parser.parse_args(["tune", "--arch", "resnet18"]).pretrained is None
