"""The tuned baseline: the classifier's settings chosen once per evaluation on validation, then frozen.

Before the study's arms are compared, the 100% real arm is trained over a small recorded grid of learning rates,
weight decays and step budgets (epochs of the 100% pool at equal steps) in one evaluation (``slice`` or
``subject``), and the setting with the best validation criterion at its chosen checkpoint wins (lowest validation
loss in ``slice`` mode, highest validation dementia AUC in ``subject`` mode, averaged over the grid's repeats). The
test split plays no part. The winner is what a profile then freezes for every arm (``lr``, ``weight_decay``,
``epochs``); the thesis-comparable rows keep the thesis's own settings. Trials are ``study``'s and ``runner``'s.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import pandas as pd

from mri_synth.study.runner import run_study
from mri_synth.study.trial import StudyContext
from mri_synth.study.trials import TrialSpec


def baseline_grid(arch: str, split: str, *, lrs: Sequence[float], weight_decays: Sequence[float],
                  epochs: Sequence[int], seeds: Sequence[int], batch_size: int = 64, input_size: int = 0,
                  input_sizes: Sequence[int] = (), pretrained: bool | None = None) -> list[TrialSpec]:
    """The 100% real arm at equal steps for every (input size, lr, weight decay, epochs, seed) of the grid;
    ``pretrained``: from the architecture's pretrained weights (True), from scratch (False) or its default (None)."""
    return [TrialSpec(arch=arch, split=split, lr=lr, weight_decay=wd, epochs=e, equal_steps=True, seed=seed,
                      batch_size=batch_size, input_size=size, pretrained=pretrained)
            for size, lr, wd, e, seed in itertools.product(input_sizes or (input_size,), lrs, weight_decays, epochs,
                                                           seeds)]


def tune_baseline(context: StudyContext, results_dir: str | Path, arch: str = "cnn", split: str = "slice", *,
                  lrs: Sequence[float] = (1e-3, 3e-4), weight_decays: Sequence[float] = (0.0, 1e-4),
                  epochs: Sequence[int] = (5, 10), seeds: Sequence[int] = (0,), batch_size: int = 64,
                  input_size: int = 0, input_sizes: Sequence[int] = (), progress: bool = True,
                  prefix_budgets: bool = True, pretrained: bool | None = None) -> pd.DataFrame:
    """Run (or resume) the grid and rank its settings on validation.

    With ``prefix_budgets`` only the longest budget of each setting is trained, and every shorter one is read from
    its history: at a constant learning rate the first ``e`` epochs of a longer run are the ``e``-epoch run, step for
    step (the same seed, batch order and validation points; the recorded CNN tuning shows it), so the checkpoint an
    ``e``-epoch run would choose is the best validation point among the longer run's first ``e`` epochs. That
    trains 20 epochs per setting instead of 5 + 10 + 20.

    Returns:
        One row per setting, best first: ``input_size``, ``lr``, ``weight_decay``, ``epochs``, ``criterion`` (its
        name), ``score`` (the criterion's mean over seeds at the chosen checkpoints), ``n``, ``best_at`` (where the
        chosen checkpoint lies in the budget, mean over seeds: 1.0 means the last step, so a longer budget might
        have done better) and ``chosen`` (True on the first row). Written to ``<results_dir>/tuning_<split>.csv``.
    """
    trained = [max(epochs)] if prefix_budgets else epochs
    specs = baseline_grid(arch, split, lrs=lrs, weight_decays=weight_decays, epochs=trained, seeds=seeds,
                          batch_size=batch_size, input_size=input_size, input_sizes=input_sizes,
                          pretrained=pretrained)
    results, history = run_study(specs, context, results_dir, progress=progress)
    criterion = "val_loss" if split == "slice" else "val_dementia_auc"
    setting = ["input_size", "lr", "weight_decay", "epochs"]
    if prefix_budgets:
        wide = prefix_readings(results, history, criterion, epochs)
    else:
        wide = results.pivot_table(index=["trial_key", *setting], columns="metric", values="value").reset_index()
        wide["best_at"] = wide["best_step"] / wide["steps"]
    table = (wide.groupby(setting).agg(score=(criterion, "mean"), n=(criterion, "size"), best_at=("best_at", "mean"))
             .reset_index())
    table = table.sort_values("score", ascending=criterion == "val_loss", kind="stable").reset_index(drop=True)
    table.insert(4, "criterion", criterion)
    table["chosen"] = table.index == 0
    table.to_csv(Path(results_dir) / f"tuning_{split}.csv", index=False)
    return table


def prefix_readings(results: pd.DataFrame, history: pd.DataFrame, criterion: str,
                    epochs: Sequence[int]) -> pd.DataFrame:
    """Each trial's reading at every budget of ``epochs`` no longer than its own: the best ``criterion`` among its
    validation points within the budget (the first of equal ones, as ``fit`` chooses) and where it lies.

    Returns one row per (trial, budget): ``trial_key``, ``input_size``, ``lr``, ``weight_decay``, ``epochs`` (the
    budget), ``criterion``'s value and ``best_at`` (best step / the budget's steps).
    """
    steps = results[results.metric == "steps"].set_index("trial_key")["value"]
    points = history[history.metric == criterion].sort_values("step", kind="stable")
    rows = []
    for key, curve in points.groupby("trial_key", sort=False):
        own = int(curve.epochs.iloc[0])
        per_epoch = steps[key] / own
        for budget in (e for e in epochs if e <= own):
            within = curve[curve.step <= budget * per_epoch + 1e-9]
            best = within.value.idxmin() if criterion == "val_loss" else within.value.idxmax()
            rows.append({"trial_key": key, **curve.iloc[0][["input_size", "lr", "weight_decay"]].to_dict(),
                         "epochs": budget, criterion: float(within.value[best]),
                         "best_at": float(within.step[best] / (budget * per_epoch))})
    return pd.DataFrame(rows)
