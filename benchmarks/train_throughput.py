"""Training throughput of mri_synth.training.fit.fit against a naive reference loop, per architecture.

The naive reference is the kind of loop thesis code uses: a DataLoader over PIL images with per-sample torchvision
transforms (resize, ToTensor, Normalize; a 3-channel copy for the pretrained models), fp32, eager, the textbook
layer order (conv -> ReLU -> pool) and torch's default Adam. The two sides alternate for a few rounds on the same
images, so their ratio holds even on a busy machine. The naive loop runs in a fresh process with the C library's
default allocator, as thesis code does; the engine runs here with freed memory kept in the heap, as the study's
entry points (the CLI, the notebook batch) run it on the CPU (``mri_synth.training.heap``; this script is an entry
point too and switches it on; the setting is process-wide and sticks once the heap has grown, hence the second
process). For the CNN the naive loop is also timed here, with the heap kept, to show what the engine gains beyond
that setting. Then: the CPU options of the engine (bf16 autocast, channels-last), the per-batch cost of every
augmentation policy, and one full 10-epoch CNN training on the full train split with evaluation after every epoch.

    .venv/bin/python benchmarks/train_throughput.py --out benchmarks/results/train_throughput_cpu.txt
    .venv/bin/python benchmarks/train_throughput.py --quick      # seconds: tiny sizes, checks it runs

The last lines are the summary: ``<arch>: <images/s> img/s, <ratio>x naive`` and the 10-epoch time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mri_synth.data.cache import load_data  # noqa: E402
from mri_synth.study.runner import cpu_name  # noqa: E402,F401  (stacked_throughput imports it from here)
from mri_synth.training import heap, models  # noqa: E402
from mri_synth.training.augment import POLICIES, make_augment  # noqa: E402
from mri_synth.training.fit import fit  # noqa: E402
from mri_synth.training.settings import TrainConfig  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "alzheimer_mri"


class PILDataset(Dataset):
    """What thesis code trains from: PIL images, transformed one at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = [Image.fromarray(x[0].numpy(), mode="L") for x in images]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def naive_model(name: str, spec: models.ModelSpec) -> nn.Module:
    if name == "cnn":  # the same network in the textbook order: ReLU before pool, NCHW flatten
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * (spec.input_size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, 4))
    return models.create_model(name, pretrained=False, in_chans=3, spec=spec)  # a 3x copy of every image


def naive_throughput(name: str, spec: models.ModelSpec, images, labels, steps: int, batch_size: int) -> float:
    """Images/second of the naive loop over ``steps`` batches (after one warm-up batch)."""
    channels = 1 if name == "cnn" else 3
    transform = transforms.Compose([
        transforms.Grayscale(channels), transforms.Resize(spec.input_size), transforms.ToTensor(),
        transforms.Normalize([spec.mean] * channels, [spec.std] * channels)])
    loader = DataLoader(PILDataset(images, labels, transform), batch_size=batch_size, shuffle=True)
    model = naive_model(name, spec).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    done, start = -1, 0.0
    while done < steps:
        for x, y in loader:
            if done == 0:
                start = time.perf_counter()
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def engine_throughput(name, spec, images, labels, steps: int, batch_size: int, **options) -> float:
    """Images/second of ``fit`` over ``steps`` batches: the difference of two runs removes set-up and warm-up."""
    def run(n: int) -> float:
        config = TrainConfig(max_steps=n, batch_size=batch_size, progress=False, **options)
        return fit(name, images, labels, images[:8], labels[:8], config, spec=spec,
                   pretrained=False).history["wall_time_s"].iloc[-1]
    return (steps - 1) * batch_size / (run(steps) - run(1))


def in_fresh_process(kind: str, name: str, args: argparse.Namespace, steps: int, batch_size: int) -> float:
    """Images/second of the naive loop or the engine, measured in a new process with the default allocator."""
    command = [sys.executable, __file__, "--worker", kind, "--archs", name, "--source", args.source,
               "--worker-steps", str(steps), "--worker-batch", str(batch_size)]
    command += ["--quick"] * args.quick + (["--threads", str(args.threads)] if args.threads else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


def worker(args: argparse.Namespace) -> None:
    """``--worker naive|engine``: one measurement with the C library's default allocator, printed as JSON."""
    name = args.archs
    spec = models.tiny_model(name)[1] if args.quick else models.get_spec(name)
    data = load_data(args.source)
    n = (args.worker_steps + 1) * args.worker_batch
    images, labels = data.train.images[:n], data.train.labels[:n]
    if args.worker == "naive":
        rate = naive_throughput(name, spec, images, labels, args.worker_steps, args.worker_batch)
    else:
        rate = engine_throughput(name, spec, images, labels, args.worker_steps, args.worker_batch)
    print(json.dumps({"images_per_s": rate}))


def augment_cost_ms(images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median milliseconds to augment one batch, per policy."""
    result = {}
    generator = torch.Generator().manual_seed(0)
    for policy in POLICIES:
        augment = make_augment(policy)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            augment(images, generator)
            times.append(time.perf_counter() - start)
        result[policy] = 1e3 * statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.environ.get("MRI_SYNTH_DATA") or (str(SHARED) if SHARED.is_dir()
                                                                                   else "sample"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks that it runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--archs", default="cnn,resnet18,vit")
    parser.add_argument("--rounds", type=int, default=3, help="alternating naive/engine rounds for the cnn")
    parser.add_argument("--parts", default="archs,options,augment,full",
                        help="which parts to run: archs (naive vs engine), options, augment, full (10 epochs)")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--worker", choices=("naive", "engine"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    data = load_data(args.source)
    device = TrainConfig().resolved_device()
    # An entry point keeps freed memory in the heap on the CPU (mri_synth.training.heap; fit() leaves the allocator
    # alone): switched on here for the whole process, as the CLI and the notebook batch do, so the naive loop timed
    # here gets it too and that ratio is the engine's own. The options part measures it on and off.
    heap_kept = heap.retain_freed_memory() if device.type == "cpu" else False
    say(f"# train_throughput  {time.strftime('%Y-%m-%d %H:%M')}  quick={args.quick}")
    say(f"# torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {cpu_name()}")
        + f", threads {torch.get_num_threads()}, cores {os.cpu_count()}, data {data.source} ({len(data.train)} train)"
        + f", freed memory kept in the heap: {heap_kept}")
    say(f"# load average before: {os.getloadavg()}")
    # Timed steps per architecture (fewer for the slow ones); --quick swaps in the tiny variants.
    plan = {"cnn": 30, "resnet18": 4, "vit": 2}
    batch = {"cnn": 64, "resnet18": 64, "vit": 32}  # ViT-B/16 at 224: batch 32 keeps its activations in memory
    # Naive and engine alternate for a few rounds and the median ratio is kept: on a shared CPU the load moves
    # between measurements, and alternating exposes both sides to the same conditions.
    rounds = {"cnn": 1 if args.quick else args.rounds, "resnet18": 1, "vit": 1}
    summary = []
    parts = set(args.parts.split(","))
    for name in args.archs.split(",") if "archs" in parts else []:
        spec = models.tiny_model(name)[1] if args.quick else models.get_spec(name)
        steps = 3 if args.quick else plan[name]
        n = steps * batch[name] + batch[name]
        images, labels = data.train.images[:n], data.train.labels[:n]
        naive_rates, engine_rates, kept_rates = [], [], []
        for _ in range(rounds[name]):
            naive_rates.append(in_fresh_process("naive", name, args, steps, batch[name]))
            engine_rates.append(engine_throughput(name, spec, images, labels, steps, batch[name]))
            if name == "cnn":
                kept_rates.append(naive_throughput(name, spec, images, labels, steps, batch[name]))
        naive, engine = statistics.median(naive_rates), statistics.median(engine_rates)
        ratio = statistics.median(e / v for e, v in zip(engine_rates, naive_rates))
        say(f"{name:9s} input {spec.input_size}px batch {batch[name]}, {steps} steps x {rounds[name]} rounds: "
            f"naive {naive:8.1f} img/s | engine {engine:8.1f} img/s | {ratio:5.2f}x (median of rounds: "
            + ", ".join(f"{e / v:.2f}" for e, v in zip(engine_rates, naive_rates)) + ")")
        if kept_rates:
            kept_ratio = statistics.median(e / v for e, v in zip(engine_rates, kept_rates))
            say(f"{'':9s} naive with the heap kept too: {statistics.median(kept_rates):8.1f} img/s | engine "
                f"{kept_ratio:5.2f}x that (median of rounds: "
                + ", ".join(f"{e / v:.2f}" for e, v in zip(engine_rates, kept_rates)) + ")")
        summary.append(f"{name}: {engine:.1f} img/s, {ratio:.2f}x naive")

    spec = models.get_spec("cnn") if not args.quick else models.tiny_model("cnn")[1]
    steps = 3 if args.quick else 30
    images, labels = data.train.images[:64 * (steps + 1)], data.train.labels[:64 * (steps + 1)]
    if "options" in parts:
        say("\n## engine options, cnn (same run)")
        for bf16 in (False, True):
            for channels_last in (False, True):
                rate = engine_throughput("cnn", spec, images, labels, steps, 64, precision="bf16" if bf16 else "fp32",
                                         channels_last=channels_last)
                say(f"bf16={bf16!s:5s} channels_last={channels_last!s:5s}: {rate:8.1f} img/s")
        if heap_kept:  # the engine without it runs in a fresh process (the setting sticks once the heap has grown)
            returned, kept = [], []
            for _ in range(1 if args.quick else args.rounds):
                returned.append(in_fresh_process("engine", "cnn", args, steps, 64))
                kept.append(engine_throughput("cnn", spec, images, labels, steps, 64))
            say(f"heap default (fresh process): {statistics.median(returned):8.1f} img/s | freed memory kept: "
                f"{statistics.median(kept):8.1f} img/s | "
                f"{statistics.median(k / r for k, r in zip(kept, returned)):.2f}x"
                " (median of rounds: " + ", ".join(f"{k / r:.2f}" for k, r in zip(kept, returned)) + ")")

    if "augment" in parts:
        say("\n## augmentation cost per batch of 64 at 128px (median ms), vs one cnn training step")
        step_ms = 1e3 * 64 / engine_throughput("cnn", spec, images, labels, steps, 64)
        for policy, ms in augment_cost_ms(data.train.images[:64], 3 if args.quick else 20).items():
            say(f"{policy:15s} {ms:7.2f} ms  ({100 * ms / step_ms:5.1f}% of a {step_ms:.1f} ms step)")
        for policy in ("none", "autoaugment"):
            rate = engine_throughput("cnn", spec, images, labels, steps, 64, augment=policy)
            say(f"cnn engine with augment={policy}: {rate:8.1f} img/s")

    if "full" not in parts:
        say(f"# load average after: {os.getloadavg()}")
        say("\n## summary")
        for line in summary:
            say(line)
        _write(args.out, lines)
        return
    if args.quick:
        train, test, epochs = data.train.subset(range(128)), data.test.subset(range(64)), 1
    else:
        train, test, epochs = data.train, data.test, 10
    start = time.perf_counter()
    result = fit("cnn", train.images, train.labels, test.images, test.labels,
                 TrainConfig(epochs=epochs, progress=False))
    total = time.perf_counter() - start
    last = result.history.iloc[-1]
    say(f"\n## cnn {epochs} epochs, {len(train)} train / {len(test)} test images, evaluated every epoch")
    say(f"final test_loss {last['test_loss']:.4f}, accuracy {last['accuracy']:.4f}, "
        f"balanced_accuracy {last['balanced_accuracy']:.4f}")
    say(f"# load average after: {os.getloadavg()}")
    say("\n## summary")
    for line in summary:
        say(line)
    say(f"cnn {epochs} epochs on the {'full' if not args.quick else 'quick'} train split: {total:.1f} s")
    _write(args.out, lines)


def _write(out: str | None, lines: list[str]) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("\n".join(lines) + "\n")




if __name__ == "__main__":
    main()
