"""Train a recorded trial of the rerun again on this machine and compare: how much does the machine move a trial?

The rerun's repeats ran on two kinds of CPU (AMD EPYC, then Intel Xeon: a session's machine is drawn for it), each
repeat whole on one. This retrains one recorded trial (same spec, seed, data and code path) here, and prints its
readouts beside the recorded ones: the machine's effect on one trial, to set beside the spread between repeats.

    MRI_SYNTH_DATA=../shared/data/alzheimer_mri MRI_SYNTH_CACHE=.cache OMP_NUM_THREADS=1 \
        python benchmarks/same_trial_here.py --arch vit_tiny --split subject --seed 0 --policy "30% real" \
        --out /tmp/again

The repeat's other arms are copied into ``--out`` from the record, so only the chosen trial trains (a trial already
in ``--out`` is read, not trained again: a second call only prints). Results: benchmarks/results/rerun/same_trial_*.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from mri_synth.paths import PROJECT_ROOT
from mri_synth.study.trials import TrialSpec

RECORDED = PROJECT_ROOT / "benchmarks" / "results" / "rerun" / "results"
READOUTS = ("test_loss", "dementia_auc_person", "accuracy", "best_step")


def stage(recorded: Path, out: Path, split: str, seed: int, policy: str) -> dict:
    """Copy the repeat's other trials from ``recorded`` (an architecture's results folder) into ``out`` and return
    the chosen trial's recorded file.

    Raises:
        ValueError: no recorded trial of that evaluation, repeat and arm.
    """
    (out / "trials").mkdir(parents=True, exist_ok=True)
    chosen = None
    for path in sorted((recorded / "trials").glob("*.json")):
        trial = json.loads(path.read_text())
        cols = TrialSpec.from_dict(trial["spec"]).table_columns()
        if (cols["split"], cols["seed"]) != (split, seed):
            continue
        if cols["policy"] == policy:
            chosen = trial
            continue
        for f in (path, path.with_suffix(".npz")):
            if f.exists() and not (out / "trials" / f.name).exists():
                shutil.copy(f, out / "trials" / f.name)
    if chosen is None:
        raise ValueError(f"no recorded trial of {split} repeat {seed}, arm {policy!r} under {recorded}: "
                         "name one the record holds (mri-synth tables shows them)")
    return chosen


def compare(recorded: dict, again: dict) -> list[str]:
    """One line per readout: the recorded trial's value and machine beside this machine's."""
    there, here = recorded["provenance"].get("cpu", "?"), again["provenance"].get("cpu", "?")
    lines = [f"{'readout':<20} {there[:28]:>28} {here[:28]:>28} {'difference':>11}"]
    for metric in READOUTS:
        a, b = recorded["metrics"][metric], again["metrics"][metric]
        lines.append(f"{metric:<20} {a:>28.4f} {b:>28.4f} {b - a:>+11.4f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vit_tiny")
    parser.add_argument("--split", default="subject", choices=["slice", "subject"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default="30% real")
    parser.add_argument("--out", type=Path, required=True, help="a folder outside benchmarks/results")
    args = parser.parse_args(argv)
    from mri_synth.chapters.training import run_architecture  # lazy: the tests import stage and compare alone
    from mri_synth.notebooks import profile_study  # lazy: as above

    recorded = stage(RECORDED / args.arch, args.out / args.arch, args.split, args.seed, args.policy)
    config = replace(profile_study("rerun", args.arch), splits=[args.split], first_seed=args.seed, n_seeds=1,
                     results_dir=str(args.out))
    run_architecture(config, progress=False)
    key = TrialSpec.from_dict(recorded["spec"]).key  # the runner names each trial's file by its key
    again = json.loads((args.out / args.arch / "trials" / f"{key}.json").read_text())
    print(f"{args.arch}, {args.split} repeat {args.seed}, {args.policy}: the recorded trial and the same trial here "
          f"(torch {recorded['provenance'].get('torch')} / {again['provenance'].get('torch')})")
    print("\n".join(compare(recorded, again)))


if __name__ == "__main__":
    main()
