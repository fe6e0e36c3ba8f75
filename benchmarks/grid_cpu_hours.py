"""What the rerun's classifier trials cost, measured: CPU-hours per architecture, machine and evaluation (issue 24).

Every trial file records its classifier's training and evaluation time (``metrics.train_time_s``; the generator's
part is ``synthesis_time_s``, counted once per subset under issue 23, not here) and the CPU it ran on
(``provenance.cpu``). The rerun ran each trial on one thread, so a trial's seconds are its CPU-seconds.

    .venv/bin/python benchmarks/grid_cpu_hours.py --out benchmarks/results/rerun/grid_cpu_hours.txt
    .venv/bin/python benchmarks/grid_cpu_hours.py --check benchmarks/results/rerun/grid_cpu_hours.txt

``--check`` fails when the recorded file no longer says what the recorded trial files do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from mri_synth.paths import PROJECT_ROOT

RECORDED = PROJECT_ROOT / "benchmarks" / "results" / "rerun" / "results"
ARCHS = ("resnet18", "vit_tiny")
BUDGET_CPU_HOURS = 25.0  # issue 24: both architectures' trials


def trial_times(folder: Path, arch: str) -> pd.DataFrame:
    """One row per trial file of ``folder/arch/trials``: its evaluation, repeat, CPU and seconds."""
    rows = []
    for path in sorted((folder / arch / "trials").glob("*.json")):
        trial = json.loads(path.read_text())
        rows.append({"arch": arch, "split": trial["spec"]["split"], "seed": trial["spec"]["seed"],
                     "cpu": trial["provenance"].get("cpu", "") or "unknown",
                     "seconds": float(trial["metrics"]["train_time_s"])})
    if not rows:
        raise SystemExit(f"no trial files under {folder / arch / 'trials'}: pass --results the folder that holds "
                         f"<arch>/trials/*.json (default {RECORDED})")
    return pd.DataFrame(rows)


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
