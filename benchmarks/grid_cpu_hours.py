"""What the rerun's classifier trials cost, measured: CPU-hours per architecture, machine and evaluation (issue 24).

Every trial file records its classifier's training and evaluation time (``train_time_s``; the generator's part is
``synthesis_time_s``, counted once per subset under issue 23, not here) and the CPU it ran on; the runner's own
readers (``load_results``, ``trial_machines``) take both from the files. The rerun ran each trial on one thread, so a
trial's seconds are its CPU-seconds.

    .venv/bin/python benchmarks/grid_cpu_hours.py --out benchmarks/results/rerun/grid_cpu_hours.txt
    .venv/bin/python benchmarks/grid_cpu_hours.py --check benchmarks/results/rerun/grid_cpu_hours.txt

``--check`` fails when the recorded file no longer says what the recorded trial files do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from mri_synth.paths import PROJECT_ROOT
from mri_synth.study.runner import load_results, trial_machines

RECORDED = PROJECT_ROOT / "benchmarks" / "results" / "rerun" / "results"
ARCHS = ("resnet18", "vit_tiny")
BUDGET_CPU_HOURS = 25.0  # issue 24: both architectures' trials


def trial_times(folder: Path, arch: str) -> pd.DataFrame:
    """One row per trial of ``folder/arch``: its evaluation, repeat, arm, CPU (``runner.trial_machines``) and
    seconds (its ``train_time_s`` in ``runner.load_results``)."""
    if not list((folder / arch).glob("trials/*.json")):
        raise SystemExit(f"no trial files under {folder / arch / 'trials'}: pass --results the folder that holds "
                         f"<arch>/trials/*.json (default {RECORDED})")
    results, _ = load_results(folder / arch)
    seconds = results[results["metric"] == "train_time_s"].rename(columns={"value": "seconds"})
    keys = ["arch", "split", "seed", "policy"]
    times = seconds[keys + ["seconds"]].merge(trial_machines(folder / arch), on=keys, validate="one_to_one")
    return times.assign(cpu=times["machine"].replace("", "unknown"))


def report(folder: Path, archs: tuple[str, ...] = ARCHS) -> list[str]:
    times = pd.concat([trial_times(folder, arch) for arch in archs], ignore_index=True)
    lines = ["# classifier trials of the rerun, measured (metrics.train_time_s, one thread: seconds = CPU-seconds)",
             "arch      split    cpu                            trials  CPU-h  median min/trial"]
    for (arch, split, cpu), group in times.groupby(["arch", "split", "cpu"], sort=True):
        lines.append(f"{arch:<9} {split:<8} {cpu:<30} {len(group):>6} {group.seconds.sum() / 3600:>6.1f} "
                     f"{group.seconds.median() / 60:>8.1f}")
    lines.append("")
    for arch, group in times.groupby("arch", sort=True):
        per_cpu = ", ".join(f"{cpu} {g.seconds.sum() / 3600:.1f} for {len(g)}" for cpu, g in group.groupby("cpu"))
        lines.append(f"{arch}: {len(group)} trials, {group.seconds.sum() / 3600:.1f} CPU-h ({per_cpu})")
    total = times.seconds.sum() / 3600
    lines.append(f"together: {len(times)} trials, {total:.1f} CPU-h against issue 24's {BUDGET_CPU_HOURS:.0f} "
                 f"({total - BUDGET_CPU_HOURS:+.1f})")
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RECORDED, help="folder holding <arch>/trials/*.json")
    parser.add_argument("--arch", nargs="+", default=list(ARCHS))
    parser.add_argument("--out", type=Path, help="write the report here too")
    parser.add_argument("--check", type=Path, help="fail unless this recorded report matches the trial files")
    args = parser.parse_args(argv)
    lines = report(args.results, tuple(args.arch))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    if args.check and args.check.read_text() != text:
        sys.exit(f"{args.check} does not say what the trial files under {args.results} do: write it again with "
                 f"--out {args.check}")
    return lines


if __name__ == "__main__":
    main()
