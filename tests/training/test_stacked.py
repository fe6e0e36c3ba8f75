"""Stacked training: each stacked model's history equals its lone ``fit`` run's; what cannot stack is refused.

Tolerance (fp32, CPU, one thread): epoch, step and every count-based metric (accuracy, balanced accuracy, macro-F1,
recalls) are equal; losses and ECE agree to 1e-4 absolute, weights to 1e-3. The stacked step runs the K models'
layers as batched kernels, which sum in another order than a lone model's; Adam divides each gradient by its own
running scale, so an element whose gradient is near zero can move by up to ``lr`` on a rounding difference. Over
the 10-12 steps here the measured gaps are ~1e-5 (losses) and ~6e-5 (weights). ResNet-18 from scratch amplifies
rounding faster (after 6 steps: losses ~2e-3, weights ~0.1 apart), so its history is checked over 2 steps (1e-3)
and its semantics in float64, where one stacked step equals every lone step to 1e-12, batch-norm buffers bit for bit.
"""

import copy
import math
import re
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.func import stack_module_state

from mri_synth.paths import PROJECT_ROOT
from mri_synth.training import stacked as stacked_module
from mri_synth.training.fit import fit
from mri_synth.training.models import tiny_model
from mri_synth.training.settings import TrainConfig
from mri_synth.training.stacked import (
    StackedTrial,
    StackingError,
    check_trials,
    fit_stacked,
    stacked_loss,
    trial_config,
    vmap_chunk,
)

EXACT = ["epoch", "step", "accuracy", "balanced_accuracy", "macro_f1", "recall_Mild_Demented",
         "recall_Moderate_Demented", "recall_Non_Demented", "recall_Very_Mild_Demented"]
CLOSE = ["train_loss", "test_loss", "ece"]
FP32 = dict(precision="fp32", progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trials_of(sample_data, policies=("autoaugment", "autoaugment", "autoaugment", "basic")):
    """Trials that differ in training set (and its size), seed and augmentation draws."""
    train = sample_data.train
    spans = [(0, 40), (40, 96), (96, 168), (150, 212)]
    return [StackedTrial(train.images[a:b], train.labels[a:b], seed=seed, augment=policy)
            for seed, ((a, b), policy) in enumerate(zip(spans, policies))]


def assert_same_history(alone: pd.DataFrame, stacked: pd.DataFrame, atol: float = 1e-4) -> None:
    assert list(alone.columns) == list(stacked.columns)
    pd.testing.assert_frame_equal(alone[EXACT], stacked[EXACT])
    for column in CLOSE:
        assert alone[column].tolist() == pytest.approx(stacked[column].tolist(), abs=atol), column


def lone_runs(name, trials, test, config, spec):
    return [fit(name, t.train_images, t.train_labels, test.images, test.labels, trial_config(config, t), spec=spec,
                pretrained=False) for t in trials]


@pytest.mark.parametrize("name", ["cnn", "resnet18", "vit"])
def test_a_stacked_step_is_each_models_own_step_in_float64(name):
    # In float64 rounding vanishes: one vmapped step gives every model its lone gradient, and batch norm updates
    # each model's running statistics from its own batch, bit for bit. The fp32 gaps below are rounding only.
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(tiny_model(name)[0].double().train())
    lone = [copy.deepcopy(m) for m in models]
    size = tiny_model(name)[1].input_size
    x, y = torch.randn(3, 8, 1, size, size, dtype=torch.float64), torch.randint(0, 4, (3, 8))
    params, buffers = stack_module_state(models)
    losses = stacked_loss(models[0])(params, buffers, x, y)
    losses.sum().backward()
    for k, model in enumerate(lone):
        loss = F.cross_entropy(model(x[k]), y[k])
        loss.backward()
        assert losses[k].item() == pytest.approx(loss.item(), abs=1e-12)
        for key, p in model.named_parameters():
            torch.testing.assert_close(params[key].grad[k], p.grad, atol=1e-12, rtol=0)
        for key, b in model.named_buffers():
            assert torch.equal(buffers[key][k], b), key
    if name == "resnet18":
        assert not torch.equal(buffers["bn1.running_mean"][0], buffers["bn1.running_mean"][1])


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_each_stacked_model_matches_its_lone_run(sample_data, name):
    spec = tiny_model(name)[1]
    test = sample_data.test.subset(range(48))
    trials = trials_of(sample_data) if name == "cnn" else trials_of(sample_data)[:3]
    config = TrainConfig(max_steps=12 if name == "cnn" else 6, batch_size=16, **FP32)
    stacked = fit_stacked(name, trials, test.images, test.labels, config, spec=spec, pretrained=False)
    alone = lone_runs(name, trials, test, config, spec)
    for one, many, trial in zip(alone, stacked, trials):
        assert_same_history(one.history, many.history)
        assert many.config == one.config == trial_config(config, trial)
        for a, b in zip(one.model.state_dict().values(), many.model.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
    # The sets differ in size, so the models' epochs end at different steps: each was evaluated on its own.
    assert len({tuple(r.history["step"]) for r in stacked}) == len(trials)
    # And the models did not train alike: other sets, seeds and draws.
    assert len({round(r.history["train_loss"].iloc[0], 6) for r in stacked}) == len(trials)


def test_resnet18_batch_norm_statistics_are_each_models_own(sample_data):
    # Running mean and variance are stacked buffers updated in place under vmap, each from its model's batch.
    spec = tiny_model("resnet18")[1]
    test = sample_data.test.subset(range(16))
    trials = trials_of(sample_data, policies=("autoaugment", "basic", "none"))[:3]
    config = TrainConfig(max_steps=2, batch_size=16, **FP32)
    stacked = fit_stacked("resnet18", trials, test.images, test.labels, config, spec=spec, pretrained=False)
    alone = lone_runs("resnet18", trials, test, config, spec)
    for one, many in zip(alone, stacked):
        assert_same_history(one.history, many.history, atol=1e-3)
        a, b = one.model.state_dict(), many.model.state_dict()
        assert int(b["bn1.num_batches_tracked"]) == 2
        for key in ("bn1.running_mean", "bn1.running_var", "layer4.1.bn2.running_var"):
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-4)
    first, second = (r.model.state_dict()["bn1.running_mean"] for r in stacked[:2])
    assert not torch.allclose(first, second)


def test_early_stopping_stops_each_model_on_its_own(sample_data):
    # Trial 0 learns the opposite of the held-out labels (its loss only grows): it stops; trial 1 trains on.
    images = sample_data.train.images[:64]
    mild, non = torch.zeros(64, dtype=torch.long), torch.full((64,), 2, dtype=torch.long)
    trials = [StackedTrial(images, mild, seed=0), StackedTrial(images, non, seed=1)]
    spec = tiny_model("cnn")[1]
    config = TrainConfig(epochs=6, batch_size=32, early_stopping_patience=2, **FP32)
    stacked = fit_stacked("cnn", trials, images, non, config, spec=spec, pretrained=False)
    alone = [fit("cnn", t.train_images, t.train_labels, images, non, trial_config(config, t), spec=spec,
                 pretrained=False) for t in trials]
    assert stacked[0].stopped_early and len(stacked[0].history) == 3 and stacked[0].best_epoch == 1
    assert not stacked[1].stopped_early and len(stacked[1].history) == 6
    for one, many in zip(alone, stacked):
        assert (one.stopped_early, one.best_epoch) == (many.stopped_early, many.best_epoch)
        assert_same_history(one.history, many.history)
        for a, b in zip(one.model.parameters(), many.model.parameters()):  # the best weights, not the last
            torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


@pytest.mark.parametrize("selection", ["val_loss", "val_dementia_auc"])
def test_validation_chooses_each_stacked_models_checkpoint_as_fit_does(sample_data, selection):
    # A validation set chooses the checkpoint: the stacked model equals its lone fit run, chosen step included.
    spec = tiny_model("cnn")[1]
    test, validation = sample_data.test.subset(range(32)), sample_data.test.subset(range(32, 65))
    trials = trials_of(sample_data, policies=("autoaugment", "basic", "none"))[:3]
    config = TrainConfig(max_steps=12, batch_size=16, eval_every=2, **FP32)
    kwargs = dict(validation=(validation.images, validation.labels), selection=selection)
    stacked = fit_stacked("cnn", trials, test.images, test.labels, config, spec=spec, pretrained=False, **kwargs)
    alone = [fit("cnn", t.train_images, t.train_labels, test.images, test.labels, trial_config(config, t),
                 spec=spec, pretrained=False, **kwargs) for t in trials]
    for one, many in zip(alone, stacked):
        assert_same_history(one.history, many.history)
        assert "val_loss" in many.history and many.history["val_loss"].tolist() == pytest.approx(
            one.history["val_loss"].tolist(), abs=1e-4)
        assert (many.best_step, many.best_epoch, many.optimizer_steps) == (one.best_step, one.best_epoch, 12)
        torch.testing.assert_close(many.test_proba_best, one.test_proba_best, atol=1e-4, rtol=0)
        torch.testing.assert_close(many.test_proba_last, one.test_proba_last, atol=1e-4, rtol=0)
        for a, b in zip(one.model.parameters(), many.model.parameters()):  # the chosen weights
            torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
    # the checkpoints chosen are not all the last step, so the choice itself was compared
    assert any(r.best_step != 12 for r in stacked) or selection == "val_dementia_auc"
    assert not torch.equal(stacked[0].test_proba_best, stacked[1].test_proba_best)


def test_a_stacked_model_that_stops_early_counts_its_own_steps(sample_data):
    images = sample_data.train.images[:64]
    mild, non = torch.zeros(64, dtype=torch.long), torch.full((64,), 2, dtype=torch.long)
    trials = [StackedTrial(images, mild, seed=0), StackedTrial(images, non, seed=1)]
    config = TrainConfig(epochs=6, batch_size=32, early_stopping_patience=2, **FP32)
    stacked = fit_stacked("cnn", trials, images, non, config, spec=tiny_model("cnn")[1], pretrained=False,
                          validation=(images, non))
    alone = fit("cnn", images, mild, images, non, trial_config(config, trials[0]), spec=tiny_model("cnn")[1],
                pretrained=False, validation=(images, non))
    assert stacked[0].stopped_early and stacked[0].optimizer_steps == alone.optimizer_steps == 6
    assert stacked[1].optimizer_steps == 12


def test_cosine_schedule_and_weight_decay_stack(sample_data):
    spec = tiny_model("cnn")[1]
    test = sample_data.test.subset(range(32))
    trials = trials_of(sample_data, policies=("none", "basic", "autoaugment"))[:3]
    config = TrainConfig(max_steps=6, batch_size=16, lr_schedule="cosine", weight_decay=1e-3, **FP32)
    stacked = fit_stacked("cnn", trials, test.images, test.labels, config, spec=spec, pretrained=False)
    for one, many in zip(lone_runs("cnn", trials, test, config, spec), stacked):
        assert_same_history(one.history, many.history)


def test_stacks_too_big_for_32_bit_indexing_run_in_chunks_with_the_same_result(sample_data, monkeypatch):
    # On CUDA, 128 CNNs on batches of 64 at 128 px make convolution tensors past 2**31 elements, which its kernels
    # refuse (seen on an H100); vmap then runs the models in chunks. Here a small limit forces chunks of 1 on the CPU.
    spec = tiny_model("cnn")[1]
    model = tiny_model("cnn")[0]
    one_image = 16 * 64 * 64  # the largest activation: the tiny CNN's first convolution, 16 channels at 64 px
    assert vmap_chunk(model, spec.input_size, 16, 3, torch.device("cpu")) is None
    monkeypatch.setattr(stacked_module, "INDEX_LIMIT", 16 * one_image * 2)
    assert vmap_chunk(model, spec.input_size, 16, 3, torch.device("cpu")) == 2
    monkeypatch.setattr(stacked_module, "INDEX_LIMIT", 16 * one_image)
    assert vmap_chunk(model, spec.input_size, 16, 3, torch.device("cpu")) == 1
    test = sample_data.test.subset(range(32))
    trials = trials_of(sample_data)[:3]
    config = TrainConfig(max_steps=4, batch_size=16, **FP32)
    chunked = fit_stacked("cnn", trials, test.images, test.labels, config, spec=spec, pretrained=False)
    monkeypatch.undo()
    whole = fit_stacked("cnn", trials, test.images, test.labels, config, spec=spec, pretrained=False)
    for a, b in zip(chunked, whole):
        assert_same_history(a.history, b.history, atol=1e-5)


def test_one_model_stacked_is_fit(sample_data):
    spec = tiny_model("cnn")[1]
    test = sample_data.test.subset(range(32))
    trial = trials_of(sample_data)[1]
    config = TrainConfig(max_steps=5, batch_size=16, **FP32)
    [stacked] = fit_stacked("cnn", [trial], test.images, test.labels, config, spec=spec, pretrained=False)
    [alone] = lone_runs("cnn", [trial], test, config, spec)
    assert_same_history(alone.history, stacked.history)


def test_what_cannot_stack_is_refused_with_a_fix(sample_data):
    spec = tiny_model("cnn")[1]
    test = sample_data.test.subset(range(16))
    trials = trials_of(sample_data)[:2]  # 40 and 56 images
    with pytest.raises(StackingError, match="max_steps"):  # 3 epochs of batch 16: 8 and 11 steps
        fit_stacked("cnn", trials, test.images, test.labels, TrainConfig(epochs=3, batch_size=16, **FP32),
                    spec=spec, pretrained=False)
    # What a runner groups by: any sets under a step budget; equal-size sets under an epoch budget.
    assert check_trials(trials, TrainConfig(max_steps=7, batch_size=16)) == 7
    assert check_trials([trials[0], replace(trials[0], seed=5)], TrainConfig(epochs=3, batch_size=16)) == 8
    config = TrainConfig(max_steps=2, batch_size=16, **FP32)
    with pytest.raises(StackingError, match="at least one"):
        fit_stacked("cnn", [], test.images, test.labels, config, spec=spec, pretrained=False)
    with pytest.raises(StackingError, match="compile"):
        fit_stacked("cnn", trials, test.images, test.labels, replace(config, compile=True), spec=spec,
                    pretrained=False)
    with pytest.raises(ValueError, match="uint8"):
        bad = StackedTrial(trials[0].train_images.float(), trials[0].train_labels)
        fit_stacked("cnn", [bad], test.images, test.labels, config, spec=spec, pretrained=False)
    with pytest.raises(ValueError, match="choose one of"):
        fit_stacked("cnn", [replace(trials[0], augment="mixup")], test.images, test.labels, config, spec=spec,
                    pretrained=False)
    with pytest.raises(StackingError, match="differ in size"):
        small = StackedTrial(trials[1].train_images[..., :64, :64].contiguous(), trials[1].train_labels)
        fit_stacked("cnn", [trials[0], small], test.images, test.labels, config, spec=spec, pretrained=False)


def test_dropout_is_refused_because_its_masks_cannot_match(sample_data):
    vit_spec = tiny_model("vit")[1]
    with_dropout = replace(vit_spec, model_kwargs=tuple(sorted({**dict(vit_spec.model_kwargs),
                                                                "drop_rate": 0.1}.items())))
    trial = trials_of(sample_data)[0]
    test = sample_data.test.subset(range(16))
    with pytest.raises(StackingError, match="drop_rate=0"):
        fit_stacked("vit", [trial], test.images, test.labels, TrainConfig(max_steps=1, batch_size=16, **FP32),
                    spec=with_dropout, pretrained=False)
    assert math.isfinite(fit_stacked("vit", [trial], test.images, test.labels,
                                     TrainConfig(max_steps=1, batch_size=16, **FP32), spec=vit_spec,
                                     pretrained=False)[0].history["test_loss"].iloc[0])


def test_stacked_benchmark_quick_mode_runs_end_to_end(tmp_path):
    out = tmp_path / "stacked_throughput.txt"
    script = PROJECT_ROOT / "benchmarks" / "stacked_throughput.py"
    subprocess.run([sys.executable, str(script), "--quick", "--threads", "1", "--rounds", "1", "--out", str(out)],
                   check=True, cwd=PROJECT_ROOT, timeout=300, capture_output=True)
    summary = out.read_text().split("## summary\n")[1].splitlines()
    for k, line in zip((1, 2), summary, strict=True):
        assert re.fullmatch(rf"K={k}: stacked [\d.]+ img/s, one at a time [\d.]+ img/s, [\d.]+x", line)


def test_stacked_without_the_held_out_curve_reports_what_it_reports_with_it(sample_data):
    spec = tiny_model("cnn")[1]
    test, validation = sample_data.test.subset(range(32)), sample_data.test.subset(range(32, 65))
    trials = trials_of(sample_data, policies=("autoaugment", "none"))[:2]
    runs = {curve: fit_stacked("cnn", trials, test.images, test.labels,
                               TrainConfig(max_steps=12, batch_size=16, eval_every=2, held_out_curve=curve, **FP32),
                               spec=spec, pretrained=False, validation=(validation.images, validation.labels))
            for curve in (True, False)}
    for full, sparse in zip(runs[True], runs[False]):
        assert sparse.best_step == full.best_step
        torch.testing.assert_close(sparse.test_proba_best, full.test_proba_best, atol=0, rtol=0)
        torch.testing.assert_close(sparse.test_proba_last, full.test_proba_last, atol=0, rtol=0)
        assert sparse.history.test_loss.notna().sum() == len({sparse.best_step, 12}) < len(full.history)
