"""The resumable trial runner: a grid of trial specs in, one file per finished trial, tidy tables out.

:func:`run_study` runs every spec not yet in a results folder, writes each finished trial to its own file atomically
(:func:`write_trial`, the one writer of trial files, which ``distributed`` calls too) and skips trials already
there, so a killed study resumes where it stopped and ends with the same table as an uninterrupted one. On CUDA it
trains trials that share a step as stacks (``trial_groups``). :func:`load_results` reads the tidy long tables back
(one row per trial x metric, and per trial x evaluation x metric); :func:`migrate_trial_keys` keeps files of older
key schemes usable. What a trial does is :mod:`mri_synth.study.trials`'s."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mri_synth import paths
from mri_synth.data.types import MRIData
from mri_synth.study import trial
from mri_synth.study.trial import StudyContext
from mri_synth.study.trial_groups import plan_groups, run_trial_group
from mri_synth.study.trials import TrialSpec
from mri_synth.training.settings import TrainConfig
from mri_synth.training.stacked import StackingError

RECORDED_RESULTS = paths.PROJECT_ROOT / "benchmarks" / "results"
"""Results folders under here are the study's record: their trials must cite a clean commit of the code."""


class RecordingError(RuntimeError):
    """Trials would be recorded under ``benchmarks/results`` from code that no commit holds."""


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(data: MRIData) -> dict[str, Any]:
    """What a result depends on beyond its spec: data, code version, packages, machine.

    ``git_dirty`` says whether the code differs from ``git_commit``: tracked files with uncommitted changes, the
    recorded results under ``benchmarks/results`` left out (a study that records its trials changes them as it runs).
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     ":(exclude)benchmarks/results"], cwd=paths.PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    versions = {p: metadata.version(p) for p in ("torch", "torchvision", "timm", "diffusers", "numpy", "pandas")}
    return {"data_source": data.source, "data_fingerprint": data.fingerprint, "git_commit": commit,
            "git_dirty": dirty, "versions": versions, "python": platform.python_version(),
            "machine": platform.machine(), "cpu": cpu_name(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""}


def require_clean_code(results_dir: str | os.PathLike, prov: dict[str, Any]) -> None:
    """Refuse to record new trials under ``benchmarks/results`` unless the code is a clean commit.

    A recorded trial cites the commit that made it; with uncommitted changes that commit is not the code that ran.
    Results folders elsewhere (``runs/``, a temporary folder) are not the record and are never refused.
    """
    if not Path(results_dir).resolve().is_relative_to(RECORDED_RESULTS.resolve()):
        return
    if not prov["git_commit"] or prov["git_dirty"]:
        state = "uncommitted changes" if prov["git_commit"] else "no git commit"
        raise RecordingError(f"{results_dir} is a recorded results folder and the code has {state}: commit the code "
                             "first (results may follow in a later commit), then run again; nothing was trained")


def _atomic_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=float))
    os.replace(tmp, path)


def _atomic_npz(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_predictions(results_dir: str | os.PathLike, key: str) -> dict[str, np.ndarray]:
    """The stored test predictions of trial ``key``: ``test_ids``, ``test_labels`` and the class probabilities at
    the validation-chosen checkpoint (``proba_best``) and the last step (``proba_last``)."""
    found = sorted(Path(results_dir).rglob(f"trials/{key}.npz"))
    if not found:
        raise FileNotFoundError(f"no stored predictions of trial {key} under {results_dir} (trials of protocol 1 "
                                "kept none): rerun the trial to get them")
    with np.load(found[0]) as stored:
        return {name: stored[name] for name in stored.files}


def per_image_losses(results: pd.DataFrame, results_dir: str | os.PathLike, which: str = "best") -> pd.DataFrame:
    """One row per (trial, test slice): the spec columns of ``results`` and the slice's cross-entropy ``loss``.

    Intervals that resample both repeats and test people read this (``intervals.two_level_interval``).
    """
    frames = []
    columns = [c for c in results.columns if c not in ("metric", "value")]
    for row in results.drop_duplicates("trial_key")[columns].to_dict("records"):
        stored = load_predictions(results_dir, row["trial_key"])
        proba = stored[f"proba_{which}"].astype(np.float64)
        labels = stored["test_labels"].astype(np.int64)
        loss = -np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, None))
        people = stored["test_people"] if "test_people" in stored else np.full(len(labels), -1)
        frames.append(pd.DataFrame({"test_id": stored["test_ids"], "person": people, "label": labels,
                                    "loss": loss}).assign(**row))
    return pd.concat(frames, ignore_index=True)


def open_results(results_dir: str | os.PathLike, context: StudyContext) -> tuple[Path, dict[str, Any]]:
    """Make ``results_dir/trials`` ready for ``context``'s data; return it and the run's provenance.

    A results folder made from other data is refused rather than mixed; older key schemes are migrated.
    """
    results_dir = Path(results_dir)
    trials_dir = results_dir / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance(context.data)
    prov_file = results_dir / "provenance.json"
    if prov_file.exists():
        earlier = json.loads(prov_file.read_text())
        if earlier["data_fingerprint"] != prov["data_fingerprint"]:
            raise ValueError(f"{results_dir} holds results on data {earlier['data_source']} "
                             f"({earlier['data_fingerprint']}), not {context.data.source}: choose another results "
                             "folder for this data")
    else:
        _atomic_json(prov_file, prov)
    migrate_trial_keys(trials_dir)
    return trials_dir, prov


def pending(specs: Sequence[TrialSpec], trials_dir: Path) -> list[TrialSpec]:
    """The specs without a finished trial file in ``trials_dir`` (the JSON file marks a trial finished)."""
    return [s for s in specs if not (trials_dir / f"{s.key}.json").exists()]


def write_trial(trials_dir: Path, spec: TrialSpec, outcome: dict[str, Any], prov: dict[str, Any], *,
                stacked: int = 1) -> None:
    """Write one finished trial: its predictions (``<key>.npz``), then ``<key>.json``, each atomically.

    The one place trial files are written (the sequential runner and ``distributed`` both call it); ``stacked``
    records how many models shared the trial's training step (1: trained alone); ``machine`` where it ran (the
    GPU's name, else the CPU architecture), ``cpu`` its processor and ``torch`` the torch version: one study's trials
    may come from several machines, and a contrast is fair only between trials of one machine and torch version.
    """
    outcome = dict(outcome)
    predictions = outcome.pop("predictions", None)
    if predictions is not None:  # written first: the JSON file is what marks a trial finished
        _atomic_npz(trials_dir / f"{spec.key}.npz", predictions)
    machine = prov.get("cuda") or prov.get("machine", "")
    where = {"git_commit": prov["git_commit"], "git_dirty": prov.get("git_dirty", False), "stacked": stacked,
             "machine": machine, "cpu": prov.get("cpu", ""), "torch": prov.get("versions", {}).get("torch", "")}
    _atomic_json(trials_dir / f"{spec.key}.json", {"spec": asdict(spec), "columns": spec.table_columns(),
                                                   "provenance": where, **outcome})


def write_tables(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rewrite ``results.parquet`` and ``history.parquet`` of a results folder from every trial file in it.

    The tables always hold the folder's trials, all of them (not only those of the grid that ran last), so a table
    never disagrees with the trial files beside it.
    """
    results_dir = Path(results_dir)
    results, history = load_results(results_dir)
    results.to_parquet(results_dir / "results.parquet")
    history.to_parquet(results_dir / "history.parquet")
    return results, history


def finish_study(specs: Sequence[TrialSpec], results_dir: str | os.PathLike, *, ran: bool = True
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rewrite the folder's tables (:func:`write_tables`) when trials ran or a table is missing; return the tables of
    ``specs``' trials only. A study that finds every trial finished only reads: a recorded folder stays as committed."""
    results_dir = Path(results_dir)
    if ran or not all((results_dir / name).exists() for name in ("results.parquet", "history.parquet")):
        write_tables(results_dir)
    return load_results(results_dir, keys=[s.key for s in specs])


def run_study(specs: Sequence[TrialSpec], context: StudyContext, results_dir: str | os.PathLike, *,
              progress: bool = True, stack: bool | None = None,
              max_stack: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every spec not yet in ``results_dir``; return the (results, history) tables of all of them.

    Each finished trial is written atomically to ``results_dir/trials/<key>.json`` (:func:`write_trial`), so a
    killed study loses at most the trials it was running and the next call resumes there. ``results.parquet`` and
    ``history.parquet`` are rewritten at the end. A results folder made from other data is refused rather than mixed.

    Args:
        stack: Train pending trials that can share a step in stacks of up to ``max_stack`` (``None``: by
            architecture, ``trial_groups.STACK_LIMITS``);
            ``None`` (default): on CUDA only, where it pays (on the CPU it runs at 0.3x). A group that cannot
            stack after all falls back to one trial at a time.
    """
    trials_dir, prov = open_results(results_dir, context)
    todo = pending(specs, trials_dir)
    if todo:
        require_clean_code(results_dir, prov)
    if context.cpu_threads:
        torch.set_num_threads(context.cpu_threads)
    if stack is None:
        stack = TrainConfig(device=context.device).resolved_device().type == "cuda"
    groups = plan_groups(todo, context, max_stack) if stack else [[spec] for spec in todo]
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="trials", unit="trial", disable=not progress)
    for group in groups:
        first = group[0]
        bar.set_postfix_str(f"{first.arch} {first.policy} seed {first.seed}" + (f" +{len(group) - 1} stacked"
                                                                                 if len(group) > 1 else ""))
        try:
            outcomes = run_trial_group(group, context) if len(group) > 1 else None
        except StackingError as err:
            print(f"{len(group)} trials cannot train stacked ({err}); training them one at a time")
            outcomes = None
        if outcomes is None:
            for spec in group:
                # trial.run_trial looked up at call time: tests may wrap it
                write_trial(trials_dir, spec, trial.run_trial(spec, context), prov)
                bar.update(1)
            continue
        for spec, outcome in zip(group, outcomes):
            write_trial(trials_dir, spec, outcome, prov, stacked=len(group))
            bar.update(1)
    bar.close()
    return finish_study(specs, results_dir, ran=bool(todo))


def migrate_trial_keys(trials_dir: str | os.PathLike) -> int:
    """Give trial files written under an older key scheme their current key, so they are reused, not rerun.

    Older versions put the diffusion preset into the spec of every arm; a ``none`` or ``repeat`` trial's key then
    changed with the preset. Each file's stored spec is read back through :class:`TrialSpec` (which drops the
    label where no generator is used) and the file is rewritten under that spec's key. A file whose current key
    is already taken by another is moved to ``superseded/`` beside them, never deleted.

    Returns:
        How many files were given a new key.
    """
    trials_dir = Path(trials_dir)
    moved = 0
    for path in sorted(trials_dir.glob("*.json")):
        trial = json.loads(path.read_text())
        spec = TrialSpec.from_dict(trial["spec"])
        if spec.key == path.stem:
            continue
        target = trials_dir / f"{spec.key}.json"
        if target.exists():
            (trials_dir / "superseded").mkdir(exist_ok=True)
            os.replace(path, trials_dir / "superseded" / path.name)
            continue
        if path.with_suffix(".npz").exists():
            os.replace(path.with_suffix(".npz"), target.with_suffix(".npz"))
        _atomic_json(target, {**trial, "spec": asdict(spec), "columns": spec.table_columns(),
                              "migrated_from": path.stem})
        path.unlink()
        moved += 1
    if moved:
        print(f"{trials_dir}: {moved} trial file(s) written by an older version were given their current key")
    return moved


def load_results(results_dir: str | os.PathLike, keys: Sequence[str] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy tables of a results folder (or of several, searched recursively).

    Returns:
        ``results``: one row per trial x metric (spec columns, ``metric``, ``value``);
        ``history``: one row per trial x evaluation x metric (spec columns, ``epoch``, ``step``, ``metric``, ``value``).
        Rows follow ``keys`` when given, else the trials' file order.
    """
    root = Path(results_dir)
    # keyed by each stored spec's current key, so files written under an older key scheme read as today's
    trials = {}
    for path in sorted(root.rglob("trials/*.json")):
        trial = json.loads(path.read_text())
        trials[TrialSpec.from_dict(trial["spec"]).key] = trial
    if keys is not None:
        missing = [k for k in keys if k not in trials]
        if missing:
            raise ValueError(f"{len(missing)} trial(s) missing from {root}: run the study to finish them")
        trials = {k: trials[k] for k in keys}
    rows, hist = [], []
    for trial in trials.values():
        cols = TrialSpec.from_dict(trial["spec"]).table_columns()  # today's columns, also for older files
        rows += [{**cols, "metric": m, "value": v} for m, v in trial["metrics"].items()]
        h = pd.DataFrame(trial["history"])
        long = h.melt(id_vars=["epoch", "step"], var_name="metric", value_name="value")
        hist.append(long.assign(**cols))
    results = pd.DataFrame(rows)
    history = pd.concat(hist, ignore_index=True) if hist else pd.DataFrame()
    return results, history


PLATFORMS = {"x86_64", "AMD64", "aarch64", "arm64", "i386", "i686", ""}
"""What ``platform.machine()`` gives: a trial file's ``machine`` that is none of these names a GPU."""


def trial_machines(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Where each trial of a results folder ran, from its file's provenance: one row per trial with ``arch``,
    ``split``, ``seed``, ``policy``, ``machine`` (the GPU's name, else the processor's) and ``torch`` (both empty in
    files written before trials recorded them).

    A contrast pairs the arms of one repeat, so it is fair when each repeat's arms share a machine and torch version
    (``findings.machines_line`` states it, and names a repeat whose arms do not)."""
    rows = []
    for path in sorted(Path(results_dir).rglob("trials/*.json")):
        trial = json.loads(path.read_text())
        cols = TrialSpec.from_dict(trial["spec"]).table_columns()
        where = trial.get("provenance") or {}
        gpu = where.get("machine", "") not in PLATFORMS
        rows.append({**{k: cols[k] for k in ("arch", "split", "seed", "policy")},
                     "machine": where["machine"] if gpu else where.get("cpu", ""), "torch": where.get("torch", "")})
    return pd.DataFrame(rows, columns=["arch", "split", "seed", "policy", "machine", "torch"])


__all__ = ["PLATFORMS", "RECORDED_RESULTS", "RecordingError", "cpu_name", "finish_study", "load_predictions",
           "load_results", "migrate_trial_keys", "open_results", "pending", "per_image_losses", "provenance",
           "require_clean_code", "run_study", "trial_machines", "write_tables", "write_trial"]
