"""The training loop: learning on real images, determinism, the step budget, batches, progress.

The three architectures run as ``tiny_model`` variants (32-64 px). One thread: the result does not depend on how
many cores the machine has, and on a shared CPU one thread per process is also the faster choice.
"""

import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mri_synth.data.sampling import stratified_sample
from mri_synth.data.types import CLASS_NAMES
from mri_synth.paths import PROJECT_ROOT
from mri_synth.training.evaluation import evaluate, predict_proba
from mri_synth.training.fit import BatchStream, fit
from mri_synth.training.models import tiny_model
from mri_synth.training.settings import TrainConfig

ARCHS = ["cnn", "resnet18", "vit"]

HISTORY_COLUMNS = (["epoch", "step", "train_loss", "test_loss", "accuracy", "balanced_accuracy", "macro_f1"]
                   + [f"recall_{c}" for c in CLASS_NAMES] + ["ece", "wall_time_s"])

QUIET = dict(progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_subsets(real_data):
    train = real_data.train.subset(stratified_sample(real_data.train.labels, 0.2, seed=0))
    test = real_data.test.subset(stratified_sample(real_data.test.labels, 0.25, seed=0))
    return train, test


def test_bad_inputs_are_explained(sample_data):
    model, spec = tiny_model("cnn")
    images, labels = sample_data.train.images[:8], sample_data.train.labels[:8]
    with pytest.raises(ValueError, match="uint8"):
        fit(model, images.float(), labels, images, labels, TrainConfig(**QUIET), spec=spec)
    with pytest.raises(ValueError, match="int64"):
        fit(model, images, labels[:4], images, labels, TrainConfig(**QUIET), spec=spec)
    with pytest.raises(ValueError, match="spec="):
        fit(model, images, labels, images, labels, TrainConfig(**QUIET))


@pytest.mark.parametrize("name", ARCHS)
def test_a_few_steps_lower_the_loss_on_real_images(real_subsets, name):
    train, _ = real_subsets
    batch = train.subset(torch.arange(0, len(train), len(train) // 48))  # ~48 images of every class
    model, spec = tiny_model(name)
    before = evaluate(model, batch.images, batch.labels, spec)["loss"]
    result = fit(model, batch.images, batch.labels, batch.images, batch.labels,
                 TrainConfig(max_steps=8, batch_size=len(batch), **QUIET), spec=spec)
    assert result.history["test_loss"].iloc[-1] < before - 0.05


# From scratch (no pretrained weights offline), on 20% of the train split, seeded: each run is deterministic.
# ResNet-18 needs a smaller lr and batch before its BatchNorm statistics settle; 48 px keeps it within seconds.
@pytest.mark.parametrize("name,size,epochs,batch_size,lr", [("cnn", 128, 3, 64, 1e-3), ("resnet18", 48, 2, 32, 3e-4),
                                                            ("vit", 32, 3, 32, 1e-3)])
def test_short_training_beats_chance_on_held_out_real_images(real_subsets, name, size, epochs, batch_size, lr):
    train, test = real_subsets
    spec = tiny_model(name)[1].with_input_size(size)
    result = fit(name, train.images, train.labels, test.images, test.labels,  # by name: seeded initial weights
                 TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, **QUIET), spec=spec, pretrained=False)
    last = result.history.iloc[-1]
    # Chance: predicting the training class frequencies for every image (loss), or one class (balanced acc .25).
    prior = torch.bincount(train.labels, minlength=4).float() / len(train)
    prior_loss = F.nll_loss(prior.log().expand(len(test), 4), test.labels).item()
    assert last["test_loss"] < prior_loss - 0.05
    assert last["balanced_accuracy"] > 0.27
    assert last["accuracy"] > (test.labels == 2).float().mean().item()  # above always answering Non_Demented


def test_history_has_every_metric_and_step_budget(sample_data):
    model, spec = tiny_model("cnn")
    train, test = sample_data.train, sample_data.test
    steps_per_epoch = math.ceil(len(train) / 64)
    result = fit(model, train.images, train.labels, test.images, test.labels,
                 TrainConfig(max_steps=steps_per_epoch + 2, **QUIET), spec=spec)
    history = result.history
    assert list(history.columns) == HISTORY_COLUMNS
    # A step budget: an evaluation at the end of epoch 1 and one after the last step, in epoch 2.
    assert history["step"].tolist() == [steps_per_epoch, steps_per_epoch + 2]
    assert history["epoch"].tolist() == [1, 2]
    assert history.drop(columns=[c for c in HISTORY_COLUMNS if c.startswith("recall_")]).notna().all().all()
    assert (history["wall_time_s"].diff().dropna() > 0).all()
    proba = predict_proba(result.model, test.images, spec)
    assert proba.shape == (len(test), 4)
    torch.testing.assert_close(proba.sum(1), torch.ones(len(test)))


def test_batches_are_full_and_an_epochs_last_batch_wraps_into_the_next():
    stream = BatchStream(10, 4, torch.Generator().manual_seed(0))
    batches, ended, labels = [], [], []
    for _ in range(5):
        index, epochs = stream.next()
        batches.append(index)
        ended.append(epochs)
        labels.append(stream.epoch_label())
    assert all(len(b) == 4 for b in batches)
    order = torch.cat(batches)
    assert sorted(order[:10].tolist()) == list(range(10)) and sorted(order[10:].tolist()) == list(range(10))
    assert not torch.equal(order[:10], order[10:])  # a new permutation every epoch
    assert ended == [0, 0, 1, 0, 1] and labels == [1, 1, 1, 2, 2]
    small = BatchStream(3, 8, torch.Generator().manual_seed(0))  # a set smaller than a batch
    index, epochs = small.next()
    assert len(index) == 8 and epochs == 2 and small.epoch_label() == 2


def test_epoch_budget_is_full_batches_over_the_epochs(sample_data):
    model, spec = tiny_model("cnn")
    train, test = sample_data.train, sample_data.test  # 212 images: an epoch is 3.3 batches of 64
    result = fit(model, train.images, train.labels, test.images[:16], test.labels[:16],
                 TrainConfig(epochs=2, **QUIET), spec=spec)
    # Epoch 1 ends within step 4 (images 192-255 of the stream), epoch 2 at step 7 = ceil(2 * 212 / 64).
    assert result.history["step"].tolist() == [4, 7] and result.history["epoch"].tolist() == [1, 2]


@pytest.mark.parametrize("name", ARCHS)
def test_same_seed_same_history_other_seed_differs(sample_data, name):
    model, spec = tiny_model(name)
    train, test = sample_data.train, sample_data.test

    def run(seed):
        config = TrainConfig(max_steps=4, batch_size=16, augment="autoaugment", seed=seed, **QUIET)
        return fit(model, train.images, train.labels, test.images, test.labels, config, spec=spec)

    first, again, other = run(0), run(0), run(1)
    drop = ["wall_time_s"]
    assert first.history.drop(columns=drop).equals(again.history.drop(columns=drop))
    for a, b in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    assert not first.history.drop(columns=drop).equals(other.history.drop(columns=drop))


def test_fit_by_name_is_seeded_and_leaves_the_callers_module_alone(sample_data):
    train, test = sample_data.train, sample_data.test
    config = TrainConfig(max_steps=2, **QUIET)
    a = fit("cnn", train.images, train.labels, test.images, test.labels, config)
    b = fit("cnn", train.images, train.labels, test.images, test.labels, config)
    assert a.history.drop(columns="wall_time_s").equals(b.history.drop(columns="wall_time_s"))
    model, spec = tiny_model("cnn")
    before = [p.clone() for p in model.parameters()]
    fit(model, train.images, train.labels, test.images, test.labels, config, spec=spec)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_cosine_schedule_changes_training(sample_data):
    model, spec = tiny_model("cnn")
    train, test = sample_data.train, sample_data.test

    def run(schedule):
        config = TrainConfig(max_steps=4, batch_size=32, lr_schedule=schedule, **QUIET)
        return fit(model, train.images, train.labels, test.images, test.labels, config, spec=spec).history

    assert run("cosine")["train_loss"].iloc[-1] != run(None)["train_loss"].iloc[-1]


def test_progress_bar_shows_or_stays_silent(sample_data, capsys):
    model, spec = tiny_model("vit")
    train = sample_data.train
    fit(model, train.images, train.labels, train.images[:16], train.labels[:16],
        TrainConfig(max_steps=2, progress=False), spec=spec)
    assert capsys.readouterr().err == ""
    fit(model, train.images, train.labels, train.images[:16], train.labels[:16],
        TrainConfig(max_steps=2, progress=True), spec=spec)
    assert "vit training" in capsys.readouterr().err


def test_throughput_benchmark_quick_mode_runs_end_to_end(tmp_path):
    out = tmp_path / "train_throughput.txt"
    script = PROJECT_ROOT / "benchmarks" / "train_throughput.py"
    subprocess.run([sys.executable, str(script), "--quick", "--source", "sample", "--archs", "cnn,vit",
                    "--threads", "1", "--out", str(out)], check=True, cwd=PROJECT_ROOT, timeout=600,
                   capture_output=True)
    summary = out.read_text().split("## summary\n")[1].splitlines()
    assert re.fullmatch(r"cnn: [\d.]+ img/s, [\d.]+x naive", summary[0])
    assert re.fullmatch(r"vit: [\d.]+ img/s, [\d.]+x naive", summary[1])
    assert re.fullmatch(r"cnn 1 epochs on the quick train split: [\d.]+ s", summary[2])


def test_a_compiled_model_trains_to_the_same_numbers(sample_data):
    train, test = sample_data.train, sample_data.test
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)  # the same initial weights
        model, spec = tiny_model("cnn")
        runs[compiled] = fit(model, train.images, train.labels, test.images, test.labels,
                             TrainConfig(max_steps=4, precision="fp32", compile=compiled, **QUIET), spec=spec)
    plain, compiled = runs[False].history, runs[True].history
    assert compiled.step.tolist() == plain.step.tolist()
    torch.testing.assert_close(torch.tensor(compiled.test_loss.to_numpy()), torch.tensor(plain.test_loss.to_numpy()),
                               rtol=1e-3, atol=1e-4)  # torch.compile changes how it runs, not what it computes
