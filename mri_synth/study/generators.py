"""Generators trained once and their banks filled before a study runs, so trials (and notebooks) only read them.

A grid's generator arms share one generator per (evaluation, repeat, real fraction, generator label): the generator
learns from that repeat's real subset and every arm and architecture that draws from it reads the same weights and
the same bank. :func:`prepare_generators` finds or trains each of them (``registry.build``: the cache is keyed by
what shapes the weights, ``synth.trained``) and fills its bank with the variations the grid's trials will draw
(``trial.training_set``, the very path a trial takes), in ``workers`` processes of one thread each. It is
resumable: a killed run keeps every generator and variation it finished, and running it again trains nothing that
is cached and makes no variation the bank holds. The command line's ``mri-synth generators --profile NAME`` runs it
for a profile's grid.

What a trial does with the images is :mod:`mri_synth.study.trial`'s; the generators themselves are ``synth``'s.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
from tqdm.auto import tqdm

from mri_synth.data.cache import load_data
from mri_synth.study.trial import StudyContext, training_set
from mri_synth.study.trials import CONTROL_ARMS, TrialSpec
from mri_synth.synth import registry
from mri_synth.synth.trained import clocks


@dataclass(frozen=True)
class GeneratorJob:
    """One generator of a grid and the trials that draw from it (their real subset is the generator's)."""

    split: str
    seed: int
    real_fraction: float
    synthetic: str
    generator: str  # the registry label, e.g. latent-cpu
    specs: tuple[TrialSpec, ...]

    @property
    def name(self) -> str:
        return f"{self.split} repeat {self.seed}, {self.real_fraction:.0%} real, {self.synthetic} {self.generator}"


def generator_jobs(specs: Sequence[TrialSpec]) -> list[GeneratorJob]:
    """The grid's generators that learn from a trial's subset, one job each, in the grid's order."""
    groups: dict[tuple, list[TrialSpec]] = {}
    for spec in specs:
        if spec.synthetic in CONTROL_ARMS or not registry.get(spec.synthetic).learns_from_subset:
            continue
        key = (spec.split, spec.seed, spec.real_fraction, spec.synthetic, spec.generator)
        groups.setdefault(key, []).append(spec)
    # one spec per way of drawing (classes, amount): the rest draw the same variations from the bank
    return [GeneratorJob(*key, specs=tuple({(s.synthetic_classes, s.synthetic_fraction): s for s in group}.values()))
            for key, group in groups.items()]


@dataclass(frozen=True)
class Runtime:
    """How a worker process rebuilds the study's context: the data source and where generators and banks live."""

    data_source: str
    bank_root: str
    generator_root: str
    generators: registry.GeneratorSettings
    device: str
    cpu_threads: int

    @classmethod
    def of(cls, context: StudyContext, data_source: str) -> "Runtime":
        return cls(data_source, str(context.bank_root), str(context.generator_root), context.generators,
                   context.device, context.cpu_threads)

    def context(self) -> StudyContext:
        return StudyContext(data=load_data(self.data_source), bank_root=Path(self.bank_root),
                            generator_root=Path(self.generator_root), generators=self.generators,
                            device=self.device, cpu_threads=self.cpu_threads)


_CONTEXT: dict[Runtime, StudyContext] = {}  # one per worker process: the data are decoded once


def run_job(job: GeneratorJob, runtime: Runtime) -> dict[str, Any]:
    """Find or train ``job``'s generator and fill its bank with what its trials draw; one row of the table."""
    context = _CONTEXT.setdefault(runtime, runtime.context())
    first = job.specs[0]
    subset = context.evaluation(first).real_subset(first.real_fraction, first.seed)
    start = clocks()
    generator = registry.build(first.synthetic, context.generator_settings(first), subset, seed=first.seed)
    built = clocks()
    drawn = sum(len(training_set(spec, context).synthetic_sources) for spec in job.specs)
    done = clocks()
    seconds = getattr(generator, "seconds", {})
    return {"split": job.split, "seed": job.seed, "real_fraction": job.real_fraction, "synthetic": job.synthetic,
            "generator": job.generator, "fingerprint": generator.fingerprint, "real_images": len(subset),
            "trained_now": not getattr(generator, "from_cache", False),
            "training_cpu_min": sum(v for k, v in seconds.items() if k.endswith("_cpu")) / 60,
            "build_s": built[0] - start[0], "variations_drawn": drawn,
            "sampling_cpu_s": done[1] - built[1], "sampling_s": done[0] - built[0],
            "trained_on": getattr(generator, "provenance", {}).get("device", "")}


def _jobs_in(workers: int, jobs: Sequence[GeneratorJob], runtime: Runtime) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        for job in jobs:
            yield run_job(job, runtime)
        return
    # spawned, not forked: a fresh interpreter per worker, each with its own torch threads (one)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(run_job, jobs, [runtime] * len(jobs))


def prepare_generators(specs: Sequence[TrialSpec], context: StudyContext, data_source: str = "", *,
                       workers: int = 2, progress: bool = True) -> pd.DataFrame:
    """Train (or find) every generator of ``specs`` and fill its bank with what their trials draw.

    Args:
        specs: The grid (trials of control arms are ignored).
        context: Where generators and banks live, the device; its ``cpu_threads`` is what each worker uses (0: 1).
        data_source: The data source the workers load; empty: the one ``context.data`` came from.
        workers: Processes at once (two on the 2-core development machine).

    Returns:
        One row per generator: its evaluation, repeat, fraction and label, its fingerprint, whether it was trained
        now (``False``: found in the cache), its training CPU minutes (as recorded when it was trained), how many
        variations its trials draw and the seconds spent drawing them (making the ones the bank lacked).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (processes at once), got {workers}")
    jobs = generator_jobs(specs)
    runtime = Runtime.of(replace(context, cpu_threads=context.cpu_threads or 1), data_source or context.data.source)
    rows = []
    started = time.perf_counter()
    for row in tqdm(_jobs_in(workers, jobs, runtime), total=len(jobs), desc="generators", disable=not progress):
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["wall_s"] = time.perf_counter() - started
    return table


__all__ = ["GeneratorJob", "Runtime", "generator_jobs", "prepare_generators", "run_job"]
