"""K trials trained stacked (mri_synth.training.stacked.fit_stacked) against the same K trials one at a time
(train.fit).

Each trial has its own training set (sizes spread from 1,536 to 5,120 slices, as the study's real fractions
are), its own seed and its own augmentation draws; every trial takes the same number of steps (an equal-step
budget) and is evaluated on the same held-out images once, after its last step. The two sides alternate over
rounds on the same trials, so their ratio holds on a busy machine. Both run with the same TrainConfig (bf16 and
the heap setting as on this machine by default); fit trains channels-last, the stack trains NCHW.

    .venv/bin/python benchmarks/stacked_throughput.py --threads 1 --out benchmarks/results/stacked_throughput_cpu.txt
    .venv/bin/python benchmarks/stacked_throughput.py --device cuda     # K = 1, 8, 32, 128
    .venv/bin/python benchmarks/stacked_throughput.py --quick          # tiny sizes: checks that it runs (a test does)

The last lines are the summary: ``K=<k>: stacked <img/s> img/s, one at a time <img/s> img/s, <ratio>x``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from train_throughput import SHARED, _write, cpu_name  # noqa: E402

from mri_synth.data.cache import load_data  # noqa: E402
from mri_synth.training import heap, models  # noqa: E402
from mri_synth.training.augment import POLICIES  # noqa: E402
from mri_synth.training.fit import fit  # noqa: E402
from mri_synth.training.settings import TrainConfig
from mri_synth.training.stacked import StackedTrial, fit_stacked, trial_config  # noqa: E402

SMALLEST, LARGEST = 1536, 5120  # slices: 30% and 100% of the thesis's train split


def cnn_setup(source: str, quick: bool):
    """The data, the CNN's spec and the range of training-set sizes (tiny ones with ``quick``)."""
    data = load_data("sample" if quick else source)
    spec = models.tiny_model("cnn")[1] if quick else models.get_spec("cnn")
    smallest, largest = (40, 80) if quick else (SMALLEST, min(LARGEST, len(data.train)))
    return data, spec, smallest, largest


def make_trials(images: torch.Tensor, labels: torch.Tensor, k: int, augment: str, smallest: int,
                largest: int) -> list[StackedTrial]:
    """K trials with training sets of sizes spread over [smallest, largest], seeds 0..K-1."""
    sizes = torch.linspace(smallest, largest, k).round().long().tolist() if k > 1 else [smallest]
    generator = torch.Generator().manual_seed(0)
    trials = []
    for seed, size in enumerate(sizes):
        pick = torch.randperm(len(images), generator=generator)[:size]
        trials.append(StackedTrial(images[pick], labels[pick], seed=seed, augment=augment))
    return trials


def time_stacked(arch, trials, test, config, spec) -> float:
    start = time.perf_counter()
    fit_stacked(arch, trials, test.images, test.labels, config, spec=spec, pretrained=False)
    return time.perf_counter() - start


def time_one_at_a_time(arch, trials, test, config, spec) -> float:
    start = time.perf_counter()
    for trial in trials:
        fit(arch, trial.train_images, trial.train_labels, test.images, test.labels, trial_config(config, trial),
            spec=spec, pretrained=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.environ.get("MRI_SYNTH_DATA") or (str(SHARED) if SHARED.is_dir()
                                                                                   else "sample"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--ks", default=None, help="stack sizes (default 1,4,8 on the CPU, 1,8,32,128 on CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="steps per trial (default 10 CPU, 50 CUDA)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--augment", default="none", choices=POLICIES)
    parser.add_argument("--rounds", type=int, default=2, help="alternating stacked / one-at-a-time rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast (default: as TrainConfig decides)")
    parser.add_argument("--also-nchw", action="store_true",
                        help="also time the one-at-a-time side in NCHW layout (the layout the stack trains in)")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes: checks that it runs")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    ks = [int(k) for k in (args.ks or ("1,2" if args.quick else "1,8,32,128" if cuda else "1,4,8")).split(",")]
    steps = args.steps or (2 if args.quick else 50 if cuda else 10)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    data, spec, smallest, largest = cnn_setup(args.source, args.quick)
    batch = 16 if args.quick else args.batch_size
    test = data.test.subset(range(min(128, len(data.test))))  # one evaluation per trial; kept small
    config = TrainConfig(max_steps=steps, batch_size=batch, device=args.device, progress=False,
                         precision="fp32" if args.fp32 else "auto")
    device = config.resolved_device()
    bf16 = config.use_bf16(device)
    heap_kept = heap.retain_freed_memory() if device.type == "cpu" else False  # both sides get it
    say(f"# stacked_throughput  {time.strftime('%Y-%m-%d %H:%M')}  quick={args.quick}")
    say(f"# torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if cuda else f", {cpu_name()}")
        + f", threads {torch.get_num_threads()}, cores {os.cpu_count()}, data {data.source} ({len(data.train)} train)"
        + f", freed memory kept in the heap: {heap_kept}")
    say(f"# cnn {spec.input_size}px, batch {batch}, {steps} steps per trial, augment {args.augment}, sets of "
        f"{smallest}-{largest} images, {len(test)} held-out images, bf16 {bf16}, {args.rounds} rounds")
    say(f"# load average before: {os.getloadavg()}")
    warm = make_trials(data.train.images, data.train.labels, 2, args.augment, smallest, largest)
    time_stacked("cnn", warm, test, replace(config, max_steps=2),
                 spec)
    summary = []
    for k in ks:
        trials = make_trials(data.train.images, data.train.labels, k, args.augment, smallest, largest)
        stacked, alone, nchw = [], [], []
        for _ in range(args.rounds):
            alone.append(time_one_at_a_time("cnn", trials, test, config, spec))
            stacked.append(time_stacked("cnn", trials, test, config, spec))
            if args.also_nchw:
                nchw.append(time_one_at_a_time("cnn", trials, test, replace(config, channels_last=False), spec))
        images = k * steps * batch
        ratio = statistics.median(a / s for a, s in zip(alone, stacked))
        say(f"K={k:4d}: stacked {statistics.median(stacked):7.2f} s | one at a time {statistics.median(alone):7.2f} s"
            f" | {ratio:5.2f}x (rounds: " + ", ".join(f"{a / s:.2f}" for a, s in zip(alone, stacked)) + ")")
        if nchw:
            say(f"        one at a time in NCHW {statistics.median(nchw):7.2f} s | stacked "
                f"{statistics.median(a / s for a, s in zip(nchw, stacked)):5.2f}x that (rounds: "
                + ", ".join(f"{a / s:.2f}" for a, s in zip(nchw, stacked)) + ")")
        summary.append(f"K={k}: stacked {images / statistics.median(stacked):.1f} img/s, one at a time "
                       f"{images / statistics.median(alone):.1f} img/s, {ratio:.2f}x")
        if cuda:
            say(f"        peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
            torch.cuda.reset_peak_memory_stats()
    say(f"# load average after: {os.getloadavg()}")
    say("\n## summary")
    for line in summary:
        say(line)
    _write(args.out, lines)


if __name__ == "__main__":
    main()
