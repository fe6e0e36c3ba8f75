"""The study on Ray: trials (or stacked groups of them) and diffusion generators as Ray tasks, one results table.

:func:`run_study_ray` does what ``runner.run_study`` does, spread over a Ray cluster (a local one, or one at an
address): it skips finished trials before dispatch, trains each generator that learns from a trial's subset once per
(subset, generator) in a task of its own, then hands every pending trial (or, with ``stack=True``, every stacked
group of them, ``trial_groups``) to a task with a share of a GPU (``num_gpus``; fractional shares let several small
trainings run on one device, which on an H100 beats stacking). The driver writes each finished trial's files as its
task returns (``runner.write_trial``, the one writer), so a failed task (an exception, a crashed worker) loses
nothing that finished: it is reported, the others go on, and :class:`TrialsFailed` is raised at the end with what to
rerun. The table is read back from the trial files exactly as the sequential runner reads it.

Ray is an optional extra (``pip install -e '.[ray]'``); nothing imports it until this runs. On a cluster of several
machines every node needs this package and the cache folder (``MRI_SYNTH_CACHE``: trained generators, the synthetic
bank) on a shared file system; the data travel once through Ray's object store. What a trial does is ``study``'s.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from mri_synth.study import runner, trial
from mri_synth.study import trials as study
from mri_synth.study.trial import StudyContext
from mri_synth.study.trial_groups import plan_groups, run_trial_group
from mri_synth.study.trials import TrialSpec
from mri_synth.synth import registry
from mri_synth.training.stacked import StackingError

Outcomes = list[dict[str, Any]]
TrainGroup = Callable[[Sequence[TrialSpec], StudyContext], Outcomes]


class TrialsFailed(RuntimeError):
    """Some tasks failed; every trial that finished is written. ``failed``: (trial keys, error) per failed task."""

    def __init__(self, failed: list[tuple[list[str], str]], results_dir: Path) -> None:
        self.failed = failed
        lines = [f"  {', '.join(keys)}: {error.strip().splitlines()[-1] if error.strip() else 'failed'}"
                 for keys, error in failed]
        super().__init__(f"{sum(len(k) for k, _ in failed)} trial(s) in {len(failed)} task(s) failed; the finished "
                         f"ones are in {results_dir / 'trials'}. Fix the cause and run the same command again to "
                         "run only the missing ones:\n" + "\n".join(lines))


def _require_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("Ray is not installed: pip install -e '.[ray]' (or run the study without --ray)") from None
    return ray


def train_group(specs: Sequence[TrialSpec], context: StudyContext) -> Outcomes:
    """One task's work: the outcomes of ``specs`` (a stacked group, or one trial), as ``runner.run_study`` makes
    them."""
    if len(specs) > 1:
        try:
            return run_trial_group(specs, context)
        except StackingError:
            pass  # trained one at a time below, as the sequential runner falls back
    return [trial.run_trial(spec, context) for spec in specs]


def _task(train: TrainGroup, specs: Sequence[TrialSpec], context: StudyContext, *after: Any) -> Outcomes:
    # ``after``: the generators this group needs (their tasks' results), so Ray starts it once they are trained
    if context.cpu_threads:
        import torch

        torch.set_num_threads(context.cpu_threads)
    return train(specs, context)


def generator_key(spec: TrialSpec, context: StudyContext) -> tuple | None:
    """What identifies the generator a trial needs trained on its subset; ``None`` if it needs none."""
    if spec.synthetic in study.CONTROL_ARMS or not registry.get(spec.synthetic).learns_from_subset:
        return None
    return spec.split, spec.fold, spec.real_fraction, spec.seed, spec.synthetic, spec.generator


def prepare_generator(specs: Sequence[TrialSpec], context: StudyContext) -> str:
    """Train the generator ``specs`` share (on their one real subset; cached) and fill the bank with what they draw.

    Returns the generator's fingerprint. Trials then load it from the cache and only read the bank.
    """
    fingerprint = ""
    if context.cpu_threads:
        import torch

        torch.set_num_threads(context.cpu_threads)
    for spec in dict.fromkeys(replace(s, arch="cnn", augment="none") for s in specs):  # one per distinct draw
        fingerprint = trial.training_set(spec, context).generator_fingerprint
    return fingerprint


def run_study_ray(specs: Sequence[TrialSpec], context: StudyContext, results_dir: str | os.PathLike, *,
                  address: str | None = None, num_gpus: float | None = None, num_cpus: float = 1,
                  stack: bool | None = None, max_stack: int | None = None, train: TrainGroup = train_group,
                  retries: int = 0, progress: bool = True,
                  init: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every spec not yet in ``results_dir`` as Ray tasks; return the same tables as ``runner.run_study``.

    Args:
        address: A running cluster (``ray.init(address=...)``, e.g. ``auto`` or ``ray://host:10001``); ``None``
            starts a local Ray (or uses the one this process already started).
        num_gpus: GPU share of one trial's task (a stacked group of K asks ``min(1, K x num_gpus)``); ``None``:
            0.125 when the cluster has GPUs (8 trials share a device), else 0. Generator tasks ask for
            :func:`generator_gpus` of their preset when there are GPUs.
        num_cpus: CPUs per task.
        stack: Train trials that share a step as stacked groups (``trial_groups``); ``None``: no. On an H100,
            8 CNN trials in processes sharing the device ran 3.0x one at a time, a stack of 32 in one process 1.8x
            (``benchmarks/results/gpu_check_h100/``): separate tasks with GPU shares are the faster way there.
        max_stack: Models per stack (``None``: ``trial_groups.STACK_LIMITS`` by architecture).
        train: What a task runs for its specs (default :func:`train_group`); it must return one outcome per spec.
        retries: Ray's ``max_retries`` per task (a crashed worker is retried this many times).
        init: Extra ``ray.init`` arguments (e.g. ``num_cpus``, ``include_dashboard``) when this call starts Ray.

    Raises:
        TrialsFailed: after every task has ended, if any failed; all finished trials are written.
    """
    ray = _require_ray()
    trials_dir, prov = runner.open_results(results_dir, context)
    todo = runner.pending(specs, trials_dir)
    if todo:
        runner.require_clean_code(results_dir, prov)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, **(init or {}))
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        share = num_gpus if num_gpus is not None else (0.125 if gpus else 0)
        stack = bool(stack)
        failed: list[tuple[list[str], str]] = []
        if todo:
            failed = _dispatch(ray, todo, context, trials_dir, prov, share=share, gpus=gpus, num_cpus=num_cpus,
                               stack=stack, max_stack=max_stack, train=train, retries=retries, progress=progress,
                               total=len(specs))
    finally:
        if started:
            ray.shutdown()
    if failed:
        raise TrialsFailed(failed, Path(results_dir))
    return runner.finish_study(specs, results_dir, ran=bool(todo))


def generator_gpus(label: str) -> float:
    """The GPU share of one generator task: a whole GPU for a real-size ``gpu`` preset, an eighth for the small ones.

    Small generators leave an H100 latency-bound: 20 latent-cpu generators sharing one ran 4.4x one at a time
    (287 s each, about 65 s alone; ``benchmarks/results/real/README.md``).
    """
    return 1.0 if label.partition(":")[0].endswith("gpu") else 0.125


def _dispatch(ray: Any, todo: list[TrialSpec], context: StudyContext, trials_dir: Path, prov: dict, *, share: float,
              gpus: float, num_cpus: float, stack: bool, max_stack: int | None, train: TrainGroup, retries: int,
              progress: bool, total: int) -> list[tuple[list[str], str]]:
    """Submit generator and trial tasks; write each trial as it returns; return the failed tasks."""
    context_ref = ray.put(context)  # the data travel once
    by_generator: dict[tuple, list[TrialSpec]] = {}
    for spec in todo:
        key = generator_key(spec, context)
        if key is not None:
            by_generator.setdefault(key, []).append(spec)
    prepare = ray.remote(prepare_generator)
    generator_refs = {key: prepare.options(num_gpus=generator_gpus(members[0].generator) if gpus else 0,
                                           num_cpus=num_cpus, max_retries=retries).remote(members, context_ref)
                      for key, members in by_generator.items()}
    groups = plan_groups(todo, context, max_stack) if stack else [[spec] for spec in todo]
    remote = ray.remote(_task)
    tasks = {}
    for group in groups:
        after = [generator_refs[k] for k in dict.fromkeys(generator_key(s, context) for s in group) if k is not None]
        options = dict(num_gpus=min(1.0, share * len(group)), num_cpus=num_cpus, max_retries=retries)
        tasks[remote.options(**options).remote(train, group, context_ref, *after)] = group
    failed = []
    bar = tqdm(total=total, initial=total - len(todo), desc="trials (ray)", unit="trial", disable=not progress)
    waiting, start = list(tasks), time.perf_counter()
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        group = tasks[done[0]]
        try:
            outcomes = ray.get(done[0])
            if len(outcomes) != len(group):
                raise RuntimeError(f"the task returned {len(outcomes)} outcomes for {len(group)} trials")
        except Exception as error:  # a task that raised, a crashed worker, a lost node: report it, go on
            keys = [s.key for s in group]
            failed.append((keys, f"{type(error).__name__}: {error}"))
            print(f"task of trial(s) {', '.join(keys)} failed ({type(error).__name__}); the others go on")
            continue
        for spec, outcome in zip(group, outcomes):
            runner.write_trial(trials_dir, spec, outcome, prov, stacked=len(group))
            bar.update(1)
        bar.set_postfix_str(f"{time.perf_counter() - start:.0f} s")
    bar.close()
    return failed


__all__ = ["TrialsFailed", "generator_gpus", "generator_key", "prepare_generator", "run_study_ray", "train_group"]
