"""Predictions and the four-way metrics of a trained classifier, checked by hand."""

import math

import pytest
import torch

from mri_synth.data.types import CLASS_NAMES
from mri_synth.training.evaluation import autocast, evaluate, metrics_from_proba, predict_proba
from mri_synth.training.models import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_metrics_by_hand():
    labels = torch.tensor([0, 0, 2, 2, 3])
    proba = torch.tensor([[0.9, 0.0, 0.1, 0.0],   # right, confidence 0.9
                          [0.2, 0.0, 0.8, 0.0],   # wrong (predicts 2), confidence 0.8
                          [0.0, 0.0, 0.6, 0.4],   # right, 0.6
                          [0.0, 0.0, 0.7, 0.3],   # right, 0.7
                          [0.0, 0.0, 0.5, 0.5]])  # tie -> argmax picks class 2: wrong, 0.5
    m = metrics_from_proba(proba, labels)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["recall_Mild_Demented"] == pytest.approx(0.5) and m["recall_Non_Demented"] == pytest.approx(1.0)
    assert m["recall_Very_Mild_Demented"] == 0.0 and math.isnan(m["recall_Moderate_Demented"])
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    f1_mild, f1_non = 2 * 1 * 0.5 / 1.5, 2 * 0.5 * 1.0 / 1.5  # precision 1, recall .5 / precision .5, recall 1
    assert m["macro_f1"] == pytest.approx((f1_mild + f1_non + 0.0) / 3)
    assert m["loss"] == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.7)
                                        + math.log(0.5)) / 5)
    # ECE, 15 equal bins: each sample alone in its bin except none share: sum |hit - confidence| / n.
    assert m["ece"] == pytest.approx((0.1 + 0.8 + 0.4 + 0.3 + 0.5) / 5)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_metrics_match_scikit_learn_on_random_predictions():
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss

    gen = torch.Generator().manual_seed(0)
    proba = torch.rand(200, 4, generator=gen).softmax(1)
    labels = torch.randint(0, 4, (200,), generator=gen)
    m = metrics_from_proba(proba, labels)
    predicted = proba.argmax(1).numpy()
    assert m["accuracy"] == pytest.approx((predicted == labels.numpy()).mean())
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels.numpy(), predicted))
    assert m["macro_f1"] == pytest.approx(f1_score(labels.numpy(), predicted, average="macro"))
    assert m["loss"] == pytest.approx(log_loss(labels.numpy(), proba.numpy(), labels=[0, 1, 2, 3]), rel=1e-5)
    assert 0 <= m["ece"] <= 1


def test_perfect_confident_predictions_have_no_loss_and_no_calibration_gap():
    labels = torch.tensor([0, 1, 2, 3, 2])
    m = metrics_from_proba(torch.nn.functional.one_hot(labels, 4).float(), labels)
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == 1.0
    assert m["loss"] == pytest.approx(0.0, abs=1e-6) and m["ece"] == pytest.approx(0.0)
    assert [m[f"recall_{c}"] for c in CLASS_NAMES] == [1.0, 1.0, 1.0, 1.0]
    # the probabilities are clamped before the log: a confident mistake costs log(1e12), not infinity
    wrong = metrics_from_proba(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([0]))
    assert wrong["loss"] == pytest.approx(-math.log(1e-12)) and wrong["ece"] == pytest.approx(1.0)


def test_predict_proba_rows_sum_to_one_and_do_not_depend_on_the_batch_size():
    model, spec = tiny_model("cnn")
    model.train()
    images = _images(10)
    proba = predict_proba(model, images, spec, batch_size=4, bf16=False)
    assert proba.shape == (10, 4) and proba.dtype == torch.float32 and proba.device.type == "cpu"
    torch.testing.assert_close(proba.sum(1), torch.ones(10))
    torch.testing.assert_close(predict_proba(model, images, spec, batch_size=64, bf16=False), proba)
    assert model.training  # handed back in the mode it came in
    torch.testing.assert_close(evaluate(model, images, torch.zeros(10, dtype=torch.long), spec, bf16=False)["loss"],
                               -proba[:, 0].log().mean().item(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("images, labels, message", [
    (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), r"evaluate images must be uint8 \[N, 1, H, W\], got "
                                                                 r"torch.float32 \(2, 1, 8, 8\)"),
    (torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), "evaluate images are empty"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), r"evaluate labels must be int64 "
                                                                                      r"\[2\], got torch.int32"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 4]), r"labels must lie in 0..3"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([-1, 0]), r"labels must lie in 0..3"),
])
def test_bad_images_and_labels_are_explained(images, labels, message):
    model, spec = tiny_model("cnn")
    with pytest.raises(ValueError, match=message):
        evaluate(model, images, labels, spec)


def test_autocast_is_a_no_op_without_bf16():
    with autocast(torch.device("cpu"), False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast(torch.device("cpu"), True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
