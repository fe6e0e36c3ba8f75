"""The chosen checkpoint: early stopping returns the best model, and the test split never chooses it."""

import numpy as np
import pandas as pd
import pytest
import torch

from mri_synth.training.checkpoints import EvaluationLog
from mri_synth.training.evaluation import evaluate, metrics_from_proba
from mri_synth.training.fit import fit
from mri_synth.training.models import get_spec, tiny_model
from mri_synth.training.settings import TrainConfig

QUIET = dict(progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_early_stopping_returns_the_best_model(sample_data):
    # Training on all-"Mild" labels while the held-out labels are all "Non": the held-out loss can only grow.
    images = sample_data.train.images[:64]
    mild, non = torch.zeros(64, dtype=torch.long), torch.full((64,), 2, dtype=torch.long)
    model, spec = tiny_model("cnn")
    result = fit(model, images, mild, images, non,
                 TrainConfig(epochs=6, batch_size=32, early_stopping_patience=2, **QUIET), spec=spec)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    best_loss = result.history["test_loss"].iloc[0]
    assert evaluate(result.model, images, non, spec)["loss"] == pytest.approx(best_loss, rel=1e-5)


def test_the_test_split_never_chooses_the_checkpoint():
    # perturb the test images and labels: the chosen checkpoint and the weights stay bit-identical, the report moves
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (96, 1, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(96) % 4
    val = (images[:24].flip(-1), labels[:24])
    config = TrainConfig(epochs=4, batch_size=16, eval_every=3, progress=False, device="cpu")
    spec = get_spec("cnn").with_input_size(32)
    test_a = (images[24:48], labels[24:48])
    test_b = (255 - images[48:72], labels[48:72].flip(0))
    a = fit("cnn", images, labels, *test_a, config, spec=spec, validation=val)
    b = fit("cnn", images, labels, *test_b, config, spec=spec, validation=val)
    assert a.best_step == b.best_step and a.optimizer_steps == b.optimizer_steps == 4 * 6
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    pd.testing.assert_series_equal(a.history.val_loss, b.history.val_loss)
    assert not a.history.test_loss.equals(b.history.test_loss)
    assert a.best_step == int(a.history.step[a.history.val_loss.idxmin()])  # the lowest validation loss
    assert a.test_proba_best.shape == a.test_proba_last.shape == (24, 4)


class FixedLogits(torch.nn.Module):
    """Every image gets the same logits, set between evaluations as training would change the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(4))

    def set(self, *logits: float) -> "FixedLogits":
        with torch.no_grad():
            self.logits.copy_(torch.tensor(logits))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), 4)


def _log(validation_labels=None, selection="val_loss", **config):
    spec = get_spec("cnn").with_input_size(8)
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    validation = None if validation_labels is None else (images[:len(validation_labels)], validation_labels)
    return EvaluationLog(images, torch.tensor([0, 0, 2, 2]), spec, TrainConfig(progress=False, **config),
                         torch.device("cpu"), False, validation=validation, selection=selection), spec


def test_an_unknown_selection_is_refused():
    with pytest.raises(ValueError,
                       match=r"selection must be one of \('val_loss', 'val_dementia_auc'\), got 'test_loss'"):
        _log(selection="test_loss")


def test_the_dementia_auc_falls_back_to_the_loss_while_undefined_and_the_best_weights_come_back():
    log, spec = _log(torch.tensor([2, 2]), selection="val_dementia_auc", early_stopping_patience=1)
    model = FixedLogits()
    good = log.record(model.set(0.0, 0.0, 3.0, 0.0), 1, 2, torch.tensor(2.0))  # validation is Non only: AUC NaN
    assert np.isnan(good["val_dementia_auc"]) and good["train_loss"] == pytest.approx(1.0)
    assert good["test_loss"] == pytest.approx(metrics_from_proba(torch.tensor([[0.0, 0.0, 3.0, 0.0]]).softmax(1)
                                                                 .expand(4, 4), torch.tensor([0, 0, 2, 2]))["loss"])
    bad = log.record(model.set(3.0, 0.0, 0.0, 0.0), 2, 5, torch.tensor(6.0))
    assert bad["val_loss"] > good["val_loss"] and bad["train_loss"] == pytest.approx(2.0)  # over the 3 new steps
    assert log.stopped_early  # one evaluation without a better criterion, patience 1
    result = log.result(model, spec, TrainConfig(progress=False), optimizer_steps=5)
    assert (result.best_step, result.best_epoch, result.optimizer_steps) == (2, 1, 5)
    assert model.logits.tolist() == [0.0, 0.0, 3.0, 0.0]  # the chosen weights are loaded back
    assert result.test_proba_best.argmax(1).tolist() == [2] * 4 and result.test_proba_last.argmax(1).tolist() == [0] * 4
    assert result.history.step.tolist() == [2, 5] and result.stopped_early


def test_without_validation_or_patience_the_last_step_is_reported():
    log, spec = _log()
    model = FixedLogits()
    log.record(model.set(0.0, 0.0, 3.0, 0.0), 1, 1, torch.tensor(1.0))
    log.record(model.set(3.0, 0.0, 0.0, 0.0), 1, 2, torch.tensor(1.0))
    result = log.result(model, spec, TrainConfig(progress=False))
    assert result.best_step == 2 and result.best_epoch is None and not result.stopped_early
    assert model.logits.tolist() == [3.0, 0.0, 0.0, 0.0]  # the last weights stay
    assert torch.equal(result.test_proba_best, result.test_proba_last)
    assert "val_loss" not in result.history and list(result.history.columns[:4]) == ["epoch", "step", "train_loss",
                                                                                      "test_loss"]


def test_without_the_held_out_curve_only_the_chosen_and_last_rows_are_predicted_and_the_report_is_the_same():
    # held_out_curve=False predicts the test set at the chosen checkpoint (from its saved weights) and the last
    # step only: the same weights as with the curve, so the same reported probabilities, in fewer evaluations
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (96, 1, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(96) % 4
    val, test = (images[:24].flip(-1), labels[:24]), (images[24:48], labels[24:48])
    spec = get_spec("cnn").with_input_size(32)
    runs = {curve: fit("cnn", images, labels, *test, TrainConfig(epochs=4, batch_size=16, eval_every=3, device="cpu",
                                                                 held_out_curve=curve, **QUIET),
                       spec=spec, validation=val) for curve in (True, False)}
    full, sparse = runs[True], runs[False]
    assert full.best_step == sparse.best_step < sparse.history.step.iloc[-1]  # a checkpoint before the last step
    torch.testing.assert_close(sparse.test_proba_best, full.test_proba_best, atol=0, rtol=0)
    torch.testing.assert_close(sparse.test_proba_last, full.test_proba_last, atol=0, rtol=0)
    pd.testing.assert_series_equal(sparse.history.val_loss, full.history.val_loss)
    predicted = sparse.history.step[sparse.history.test_loss.notna()].tolist()
    assert predicted == [sparse.best_step, sparse.history.step.iloc[-1]] and len(sparse.history) == 8
    at = full.history.step.isin(predicted)
    assert sparse.history.test_loss[at].tolist() == full.history.test_loss[at].tolist()


def test_without_the_curve_a_run_that_stops_early_is_predicted_where_it_stopped():
    log, spec = _log(torch.tensor([2, 2]), early_stopping_patience=1, held_out_curve=False)
    model = FixedLogits()
    first = log.record(model.set(0.0, 0.0, 3.0, 0.0), 1, 2, torch.tensor(2.0))
    assert "test_loss" not in first  # the chosen checkpoint so far: predicted from its weights at the end
    stop = log.record(model.set(3.0, 0.0, 0.0, 0.0), 2, 4, torch.tensor(2.0))
    assert log.stopped_early and "test_loss" in stop  # a stacked model steps on after this: predicted now
    result = log.result(model.set(0.0, 3.0, 0.0, 0.0), spec, TrainConfig(progress=False))  # stepped on
    assert result.test_proba_last.argmax(1).tolist() == [0] * 4  # where it stopped, not the later weights
    assert result.test_proba_best.argmax(1).tolist() == [2] * 4 and model.logits.tolist() == [0.0, 0.0, 3.0, 0.0]
    assert result.history.test_loss.notna().tolist() == [True, True]


def test_held_out_curve_must_be_a_bool():
    with pytest.raises(ValueError, match="held_out_curve must be true or false, got 'no'"):
        TrainConfig(held_out_curve="no")
