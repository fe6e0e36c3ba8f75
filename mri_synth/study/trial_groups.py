"""Which pending trials can share a stacked step, and how a group of them is trained (``stacked.fit_stacked``).

Trials of one architecture share a step when they take the same number of optimizer steps (an ``equal_steps`` or
``max_steps`` budget: the step count is then known from the spec alone), train at one input size from the same
start (pretrained or not), with the same batch size, learning rate and weight decay, and are evaluated on the same
validation and test slices (one split and fold: the checkpoint criterion follows the split). Their training sets,
seeds and augmentation policies may all differ. :func:`plan_groups` cuts a list of pending specs into such groups
(of at most ``max_models``) and singles; :func:`run_trial_group` trains one group and returns each trial's outcome
in the form ``trial.run_trial`` returns it (both call ``trial.trial_outcome``).

Stacking pays on CUDA only (the recorded CPU benchmark: 0.3x of one at a time), so ``runner.run_study`` groups on
CUDA and trains one at a time on the CPU unless told otherwise. Epoch budgets (the thesis's) are left to run one at
a time: their step count depends on the training set's size, which is only known once it is built.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from mri_synth.study import trial
from mri_synth.study.trial import StudyContext
from mri_synth.study.trials import TrialSpec
from mri_synth.training.stacked import StackedTrial, StackingError, fit_stacked

DEFAULT_MAX_MODELS = 32
"""Models per stack of the basic CNN: the GPU target of issue 13 (K = 32 at least 10x one at a time)."""

STACK_LIMITS = {"cnn": DEFAULT_MAX_MODELS, "resnet18": 8}
"""Default models per stack by architecture, until the GPU check measures them: weights, Adam state and activations
grow K-fold, and K ViT-B/16s at 224 px (86M parameters each) would not fit one GPU, so other architectures train
one at a time unless a caller asks for more (``max_models``)."""


def group_key(spec: TrialSpec, context: StudyContext) -> tuple | None:
    """What trials must share to train in one stack; ``None`` for a trial that cannot (an epoch budget, a validation
    other than the protocol's, weights carried from the previous repeat)."""
    if spec.budget == "epochs" or spec.validation != "carved" or spec.carry:
        return None
    steps = trial.step_budget(spec, len(context.evaluation(spec).pool))
    return (spec.arch, spec.input_size, spec.pretrained, steps, spec.batch_size, spec.lr, spec.weight_decay,
            spec.split, spec.fold, spec.protocol)


def plan_groups(specs: Sequence[TrialSpec], context: StudyContext,
                max_models: int | None = None) -> list[list[TrialSpec]]:
    """``specs`` cut into stacks of 2..``max_models`` trials that share a step, and singles, in first-seen order.

    ``max_models``: models per stack; ``None``: :data:`STACK_LIMITS` by architecture (1 where none is set).
    """
    if max_models is not None and max_models < 1:
        raise ValueError(f"max_models must be >= 1 (models trained in one stack), got {max_models}")
    buckets: dict[Any, list[TrialSpec]] = {}
    for i, spec in enumerate(specs):
        key = group_key(spec, context)
        buckets.setdefault(key if key is not None else ("alone", i), []).append(spec)
    groups = []
    for members in buckets.values():
        size = max_models or STACK_LIMITS.get(members[0].arch, 1)
        groups += [members[at:at + size] for at in range(0, len(members), size)]
    return groups


def run_trial_group(specs: Sequence[TrialSpec], context: StudyContext) -> list[dict[str, Any]]:
    """Train ``specs`` (one group of :func:`plan_groups`) in one stack; one outcome per spec, as ``run_trial``'s.

    A single spec runs through ``trial.run_trial``. Each trial's ``train_time_s`` is its share of the stack's training
    time; ``synthesis_time_s`` its share of building the training sets (the generators' part).

    Raises:
        stacked.StackingError: the specs cannot share a step (a caller falls back to one at a time).
    """
    if len(specs) == 1:
        return [trial.run_trial(specs[0], context)]
    keys = {group_key(spec, context) for spec in specs}
    if None in keys or len(keys) > 1:
        raise StackingError("these trials cannot share a step (different budgets, models or evaluations): "
                            "group them with trial_groups.plan_groups")
    start = time.perf_counter()
    first = specs[0]
    ev = context.evaluation(first)
    sets = [trial.training_set(spec, context) for spec in specs]
    synthesis = (time.perf_counter() - start) / len(specs)
    start = time.perf_counter()
    trials = [StackedTrial(s.images, s.labels, seed=spec.seed, augment=spec.augment) for s, spec in zip(sets, specs)]
    results = fit_stacked(first.arch, trials, ev.test.images, ev.test.labels, trial.train_config(first, context),
                          spec=trial.model_spec(first), pretrained=first.pretrained,
                          validation=(ev.validation.images, ev.validation.labels),
                          selection=trial.selection_criterion(first))
    share = (time.perf_counter() - start) / len(specs)
    outcomes = [trial.trial_outcome(spec, context, s, result, share) for spec, s, result in zip(specs, sets, results)]
    for outcome in outcomes:
        outcome["metrics"]["synthesis_time_s"] = synthesis
    return outcomes


__all__ = ["DEFAULT_MAX_MODELS", "STACK_LIMITS", "group_key", "plan_groups", "run_trial_group"]
