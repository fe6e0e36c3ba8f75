"""What one real-data trial of ResNet-18 and of the small ViT costs on this CPU, and which CPU speed-ups pay (issue 24).

For every candidate (architecture x input size) and every engine variant (fp32 contiguous, the engine's default
channels-last in fp32, bf16 autocast, torch.compile), ``fit`` trains real training slices for a few steps, one
thread (one variant: 2 threads, priced in CPU time, wall x 2: the thread layout), the variants alternating round by
round so that their ratios hold on a busy machine; an evaluation pass
(eval mode, batch 64, the variant's precision) is timed the same way. From the per-step and per-image costs it
prices one trial of the study's grid at equal steps (5 epochs of the slice split's 100% pool: 68 steps an epoch,
340 steps; validation 768 + test 1,280 slices evaluated after every epoch of the arm's own set: 5 times for the
full-size arms, 17 for the 30% arms) and the issue's grid (4 arms x 10 repeats x 2 evaluations = 80 trials per
architecture) in CPU-hours. A process's first call of each variant is timed apart ("once": ``torch.compile``
compiles there, once per process, since the runner trains a repeat's trials in one process); the rounds after it
give the per-step cost ("step", from the difference of a run of N and of 2N steps), what every call pays besides
("fixed": building the model, one evaluation) and the evaluation's cost per image. ``--epochs`` prices another
budget (68 steps and one evaluation of the full-size arms per epoch; a 30% arm evaluates every 21 steps). Each row
also prices the trial with ``held_out_curve=False`` ("no curve": the 1,280 test slices predicted at the chosen
checkpoint and the last step only, validation still after every epoch), from the same measured costs.

    .venv/bin/python benchmarks/arch_trial_cost.py --out benchmarks/results/arch_trial_cost_cpu.txt
    .venv/bin/python benchmarks/arch_trial_cost.py --quick     # seconds: tiny sizes, checks it runs
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mri_synth.data.cache import load_data  # noqa: E402
from mri_synth.training import heap  # noqa: E402
from mri_synth.training.evaluation import autocast  # noqa: E402
from mri_synth.training.fit import fit  # noqa: E402
from mri_synth.training.models import create_model, get_spec  # noqa: E402
from mri_synth.training.settings import TrainConfig  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "alzheimer_mri"
CANDIDATES = [("cnn", 128), ("resnet18", 64), ("resnet18", 96), ("resnet18", 128), ("vit_tiny", 64),
              ("vit_tiny", 128)]
VARIANTS = {  # name -> TrainConfig fields
    "fp32": dict(precision="fp32", channels_last=False),
    "fp32 channels-last": dict(precision="fp32", channels_last=True),
    "bf16 channels-last": dict(precision="bf16", channels_last=True),
    "bf16 channels-last compile": dict(precision="bf16", channels_last=True, compile=True),
    # the thread layout: one 2-thread process instead of two 1-thread ones (CPU time = 2 x its wall time; only an
    # idle machine measures it: on a busy one the second thread has no free core)
    "bf16 channels-last 2 threads": dict(precision="bf16", channels_last=True, threads=2),
}
BASELINE = "fp32 channels-last"  # today's engine on this CPU pairs trials across machines in fp32
POOL_STEPS, SUBSET_STEPS = 68, 21  # an epoch of the slice pool (4,352 slices) and of its 30% subset, batch 64
VAL_IMAGES, TEST_IMAGES = 768, 1280
FULL_SIZE_ARMS = ("100% real", "30% real + 70% diffusion")  # the other two train on the 30% subset alone


def trial_seconds(epochs: int, step: float, per_image: float, curve: bool = True) -> float:
    """One trial's CPU seconds, the mean over the grid's four arms, at ``epochs`` of the 100% pool (equal steps)."""
    steps = POOL_STEPS * epochs
    arms = []
    for arm in ("100% real", "30% real", "30% real + 70% diffusion", "30% real + autoaugment"):
        evals = epochs if arm in FULL_SIZE_ARMS else math.ceil(steps / SUBSET_STEPS)
        images = evals * (VAL_IMAGES + TEST_IMAGES) if curve else evals * VAL_IMAGES + 2 * TEST_IMAGES
        arms.append(steps * step + images * per_image)
    return statistics.mean(arms)


def train_seconds(arch: str, size: int, variant: dict, images, labels, steps: int) -> float:
    """CPU seconds (wall seconds x the variant's threads) of ``steps`` training steps."""
    threads = variant.get("threads", 1)
    config = TrainConfig(max_steps=steps, batch_size=64, lr=1e-3, seed=0, progress=False, eval_every=steps,
                         input_size=size, **{k: v for k, v in variant.items() if k != "threads"})
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        fit(arch, images, labels, images[:64], labels[:64], config, spec=get_spec(arch).with_input_size(size),
            pretrained=False)
        return (time.perf_counter() - start) * threads
    finally:
        torch.set_num_threads(1)


def eval_seconds_per_image(arch: str, size: int, variant: dict, images) -> float:
    """CPU seconds per image of an evaluation pass (wall x threads)."""
    threads = variant.get("threads", 1)
    torch.set_num_threads(threads)
    try:
        return _eval_wall_per_image(arch, size, variant, images) * threads
    finally:
        torch.set_num_threads(1)


def _eval_wall_per_image(arch: str, size: int, variant: dict, images) -> float:
    spec = get_spec(arch).with_input_size(size)
    fmt = torch.channels_last if variant.get("channels_last") else torch.contiguous_format
    model = create_model(arch, pretrained=False, spec=spec).to(memory_format=fmt).eval()
    bf16 = variant["precision"] == "bf16"
    start = time.perf_counter()
    with torch.no_grad(), autocast(torch.device("cpu"), bf16):
        for first in range(0, len(images), 64):
            model(spec.prepare(images[first:first + 64]).contiguous(memory_format=fmt))
    return (time.perf_counter() - start) / len(images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MRI_SYNTH_DATA") or str(SHARED))
    parser.add_argument("--steps", type=int, default=12, help="training steps per timing (and twice that)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5, help="the priced budget: epochs of the 100%% pool")
    parser.add_argument("--only", nargs="*", default=None, help="arch@size candidates, e.g. resnet18@64")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    heap.retain_freed_memory()
    candidates = [(a, int(s)) for a, s in (c.split("@") for c in args.only)] if args.only else CANDIDATES
    steps, rounds, n_eval = args.steps, args.rounds, 256
    if args.quick:
        candidates, steps, rounds, n_eval = [("resnet18", 32), ("vit_tiny", 32)], 2, 1, 64
    data = load_data("sample" if args.quick else args.data)
    images, labels = data.train.images[:1024], data.train.labels[:1024]
    lines = [f"# arch_trial_cost  {time.strftime('%Y-%m-%d %H:%M')}  quick={args.quick}",
             f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread (the 2-thread "
             "variant: 2; times are CPU seconds, wall x threads), "
             f"steps {steps} and {2 * steps} per timing, {rounds} round(s), priced at {args.epochs} epochs, "
             f"load average {os.getloadavg()}"]
    print("\n".join(lines), flush=True)
    summary = []
    for arch, size in candidates:
        per = {name: {"step": [], "fixed": [], "eval": []} for name in args.variants}
        first_call = {}  # a process's first fit of a variant: torch.compile compiles there, once per process
        for name in args.variants:
            first_call[name] = train_seconds(arch, size, VARIANTS[name], images, labels, steps)
        for _ in range(rounds):
            for name in args.variants:
                variant = VARIANTS[name]
                short = train_seconds(arch, size, variant, images, labels, steps)
                long = train_seconds(arch, size, variant, images, labels, 2 * steps)
                per[name]["step"].append((long - short) / steps)
                per[name]["fixed"].append(max(short - (long - short), 0.0))
                per[name]["eval"].append(eval_seconds_per_image(arch, size, variant, data.test.images[:n_eval]))
        base = statistics.median(per[BASELINE]["step"]) if BASELINE in per else None
        for name in args.variants:
            step = statistics.median(per[name]["step"])
            ev = statistics.median(per[name]["eval"])
            fixed = statistics.median(per[name]["fixed"])
            once = max(first_call[name] - (fixed + steps * step), 0.0)  # compilation (and first-call warm-up)
            trial = trial_seconds(args.epochs, step, ev)
            sparse = trial_seconds(args.epochs, step, ev, curve=False)
            grid_h = 80 * sparse / 3600
            ratio = f"{base / step:5.2f}x" if base else "  -  "
            line = (f"{arch:9s} {size:3d}px {name:28s} step {step * 1000:7.0f} ms ({ratio} {BASELINE}) | "
                    f"eval {ev * 1000:6.2f} ms/img | fixed {fixed:5.1f} s, once {once:5.1f} s | "
                    f"trial {trial / 60:5.1f} min, no curve {sparse / 60:5.1f} ({trial / sparse:4.2f}x) | "
                    f"80 trials {grid_h:5.1f} CPU-h")
            print(line, flush=True)
            lines.append(line)
            summary.append((arch, size, name, step, sparse, grid_h))
    lines.append(f"\n## summary: cheapest variant per candidate at {args.epochs} epochs, no curve (CPU-hours of 80 "
                 "trials: 4 arms x 10 repeats x 2 evals)")
    for arch, size in candidates:
        rows = [r for r in summary if r[:2] == (arch, size)]
        best = min(rows, key=lambda r: r[4])
        lines.append(f"{arch}@{size}: {best[2]}, {best[4] / 60:.1f} min a trial, {best[5]:.1f} CPU-h")
    print("\n".join(lines[-len(candidates) - 1:]))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
