"""The history of one training run and the choice of its checkpoint: on validation slices, never on test.

:class:`EvaluationLog` is called by ``train.fit`` (and once per model by ``stacked``) after the steps at which a run
is evaluated. Each call records one history row: the test metrics (for learning curves and the last-step numbers)
and, when the run has a validation set, the validation metrics. With a validation set the checkpoint is chosen by a
named criterion on it (``val_loss``, lowest; or ``val_dementia_auc``, highest, falling back to the loss while the
AUC is undefined) and early stopping counts evaluations without a better criterion; the test slices are only
predicted, never compared, so changing them changes the reported numbers and nothing else. Without one (a caller
that has only a held-out set, e.g. the reference classifier) early stopping, when asked for, watches the held-out
loss as before. The test probabilities at the chosen checkpoint and at the last step are kept for the report.

With ``held_out_curve=False`` (``TrainSettings``) the test slices are predicted only where the report reads them:
at the chosen checkpoint (from its saved weights, in :meth:`EvaluationLog.result`) and at the last step (and at the
evaluation where early stopping stops, since a stacked model steps on after it). Those two history rows carry the
test metrics, the others leave them empty; the reported numbers are the same as with the full curve.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from mri_synth.training.evaluation import metrics_from_proba, predict_proba
from mri_synth.training.models import ModelSpec
from mri_synth.training.readouts import dementia_readouts
from mri_synth.training.settings import TrainConfig

SELECTIONS = ("val_loss", "val_dementia_auc")


@dataclass
class TrainResult:
    """A trained model and its history: one row per evaluation on the held-out set.

    History columns: epoch, step, train_loss (mean over the steps since the previous row), test_loss,
    accuracy, balanced_accuracy, macro_f1, recall_<ClassName> (x4), ece, wall_time_s (since training began).
    """

    model: nn.Module
    history: pd.DataFrame
    spec: ModelSpec | None = None
    config: TrainConfig | None = None
    stopped_early: bool = False
    best_epoch: int | None = field(default=None)
    best_step: int | None = None  # the chosen checkpoint's step (the last step when nothing chose one)
    test_proba_best: torch.Tensor | None = None  # [M, 4] held-out probabilities at the chosen checkpoint
    test_proba_last: torch.Tensor | None = None  # ... and at the last evaluation
    optimizer_steps: int | None = None  # updates made, read from the optimizer's own state


class EvaluationLog:
    """One run's evaluations, its chosen checkpoint and its early stopping.

    Args:
        test_images, test_labels: the held-out set, on the training device.
        validation: ``(images, labels)`` that choose the checkpoint; ``None`` keeps the held-out loss for early
            stopping only (the run's last weights are returned unless early stopping picked others).
        selection: the criterion on validation (:data:`SELECTIONS`).
    """

    def __init__(self, test_images: torch.Tensor, test_labels: torch.Tensor, spec: ModelSpec, config: TrainConfig,
                 device: torch.device, bf16: bool, *, validation: tuple[torch.Tensor, torch.Tensor] | None = None,
                 selection: str = "val_loss") -> None:
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        self.test_images, self.test_labels, self.spec, self.config = test_images, test_labels, spec, config
        self.device, self.bf16, self.selection = device, bf16, selection
        self.validation = None if validation is None else (validation[0].to(device), validation[1].cpu())
        self.rows: list[dict[str, float]] = []
        self.best_score, self.best_state, self.best_epoch, self.best_step = -math.inf, None, None, None
        self.test_proba_best = self.test_proba_last = None
        self.since_best, self.stopped_early, self._last_step = 0, False, 0
        self._start = time.perf_counter()
        self.curve = config.held_out_curve or validation is None  # without validation the held-out set watches

    def _proba(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return predict_proba(model, images, self.spec, batch_size=self.config.eval_batch_size, device=self.device,
                             bf16=self.bf16)

    def _score(self, row: dict[str, float]) -> float:
        """Higher is better: the validation criterion, or minus the held-out loss without a validation set."""
        if self.validation is None:
            return -row["test_loss"]
        if self.selection == "val_dementia_auc" and not math.isnan(row["val_dementia_auc"]):
            return row["val_dementia_auc"]
        return -row["val_loss"]

    def _test_metrics(self, proba: torch.Tensor) -> dict[str, float]:
        metrics = metrics_from_proba(proba, self.test_labels)
        return {"test_loss": metrics.pop("loss"), **metrics}

    def record(self, model: nn.Module, epoch: int, step: int, loss_sum: torch.Tensor) -> dict[str, float]:
        """Evaluate ``model`` after ``step``; ``loss_sum`` is the sum of the training losses since the last row."""
        row = {"epoch": epoch, "step": step, "train_loss": (loss_sum / (step - self._last_step)).item()}
        test_proba = self._proba(model, self.test_images) if self.curve else None
        if test_proba is not None:
            row |= self._test_metrics(test_proba)
        if self.validation is not None:
            val_proba = self._proba(model, self.validation[0])
            val = metrics_from_proba(val_proba, self.validation[1])
            row |= {"val_loss": val["loss"], "val_accuracy": val["accuracy"],
                    "val_balanced_accuracy": val["balanced_accuracy"],
                    "val_dementia_auc": dementia_readouts(val_proba.numpy(),
                                                          self.validation[1].numpy())["dementia_auc"]}
        row["wall_time_s"] = time.perf_counter() - self._start
        self.rows.append(row)
        self._last_step = step
        self.test_proba_last = test_proba
        watching = self.validation is not None or self.config.early_stopping_patience is not None
        if watching:
            score = self._score(row)
            if score > self.best_score:
                self.best_score, self.best_epoch, self.best_step, self.since_best = score, epoch, step, 0
                self.best_state = copy.deepcopy(model.state_dict())
                self.test_proba_best = test_proba  # None without the curve: predicted from best_state at the end
            else:
                self.since_best += 1
                patience = self.config.early_stopping_patience
                self.stopped_early = patience is not None and self.since_best >= patience
                if self.stopped_early and test_proba is None:  # the last evaluation: these weights are the last
                    self.test_proba_last = self._proba(model, self.test_images)
                    row |= self._test_metrics(self.test_proba_last)
        return row

    def _fill(self, step: int, proba: torch.Tensor) -> None:
        """Write the test metrics of ``proba`` into the last history row at ``step`` (one the curve skipped)."""
        row = next(row for row in reversed(self.rows) if row["step"] == step)
        if "test_loss" not in row:
            row |= self._test_metrics(proba)

    def result(self, model: nn.Module, spec: ModelSpec, config: TrainConfig, *,
               optimizer_steps: int | None = None) -> TrainResult:
        """The run's outcome: ``model`` with the chosen weights loaded, and the history.

        ``model`` holds the weights of the last evaluation (or, stopped early, ones the last evaluation predicted).
        """
        if not self.curve and self.rows:
            if self.test_proba_last is None:
                self.test_proba_last = self._proba(model, self.test_images)
            self._fill(self.rows[-1]["step"], self.test_proba_last)
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
            if self.test_proba_best is None:
                self.test_proba_best = self._proba(model, self.test_images)
                self._fill(self.best_step, self.test_proba_best)
        last_step = self.rows[-1]["step"] if self.rows else 0
        best = self.test_proba_best if self.test_proba_best is not None else self.test_proba_last
        return TrainResult(model=model, history=pd.DataFrame(self.rows), spec=spec, config=config,
                           stopped_early=self.stopped_early, best_epoch=self.best_epoch,
                           best_step=self.best_step if self.best_step is not None else last_step,
                           test_proba_best=best, test_proba_last=self.test_proba_last,
                           optimizer_steps=optimizer_steps)
