"""Where a stacked CNN step spends its time, and which change of the step would pay (issue 13's open target).

On one H100 (``benchmarks/results/gpu_check_h100/stacked.txt``) K = 32 stacked CNNs trained 1.83x faster than the
same 32 one at a time, against a target of 10x: 91 ms per stacked step of 32 x 64 images, where one CNN's own step
(3.1 ms) is mostly kernel launches and 32 of them hold about 2 TFLOP, a few ms of the device's bf16 arithmetic. This
script measures, for one K, the stacked step split into its parts (the K batches gathered and augmented, forward
and backward, the optimizer) under variants of the step, each timed over the same batches:

* ``as fit_stacked``: what ``mri_synth.training.stacked.fit_stacked`` runs (vmap over the stacked weights; bf16
  autocast on CUDA; cuDNN's heuristic algorithm choice);
* ``cudnn.benchmark``: cuDNN times its algorithms for the (constant) shapes first; vmap turns each convolution into
  one grouped convolution of K groups, a shape its heuristics may serve badly;
* ``fp32`` (TF32 allowed on CUDA): grouped convolutions have fewer tuned kernels in bf16;
* ``vmap chunks of 8``: the K models in groups of 8 (narrower grouped convolutions, more launches);
* ``loop, one backward``: no vmap: each model's forward through ``functional_call`` on its own weight slices in a
  Python loop, one backward and one optimizer step for all (plain convolutions, K times the launches);
* ``one model (fit's step)``: a single CNN's step as ``train.fit`` runs it (channels-last), the unit the ratio is
  against, scaled by K.

Then, for ``as fit_stacked``, PyTorch's profiler lists the operators with the most device (or CPU) time.

    python benchmarks/stacked_profile.py --device cuda --k 32 --out benchmarks/results/<gpu>/stacked_profile.txt
    python benchmarks/stacked_profile.py --quick      # tiny sizes on the CPU: checks that it runs (a test does)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stacked_throughput import cnn_setup  # noqa: E402
from train_throughput import SHARED, _write  # noqa: E402

from mri_synth.training import models  # noqa: E402
from mri_synth.training.augment import POLICIES, make_augment  # noqa: E402
from mri_synth.training.evaluation import autocast  # noqa: E402
from mri_synth.training.fit import BatchStream  # noqa: E402
from mri_synth.training.settings import default_bf16  # noqa: E402
from mri_synth.training.stacked import _batches, stacked_loss  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _backends(benchmark: bool, tf32: bool):
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = before


class Stack:
    """K CNNs' stacked weights, their Adam, and the K training sets' batch streams, as ``fit_stacked`` sets them up."""

    def __init__(self, spec, k: int, images: torch.Tensor, labels: torch.Tensor, sizes: list[int], batch: int,
                 augment: str, device: torch.device):
        nets = []
        for seed in range(k):
            torch.manual_seed(seed)
            nets.append(models.create_model(spec.name, spec=spec, pretrained=False).to(device).train())
        self.base = nets[0]
        self.params, self.buffers = stack_module_state(nets)
        self.optimizer = torch.optim.Adam(self.params.values(), lr=1e-3, fused=device.type == "cuda")
        self.spec, self.device, self.k = spec, device, k
        self.offsets = [sum(sizes[:i]) for i in range(k)]
        self.images = torch.cat([images[:n] for n in sizes]).to(device)
        self.labels = torch.cat([labels[:n] for n in sizes]).to(device)
        self.generators = [torch.Generator().manual_seed(seed) for seed in range(k)]
        self.streams = [BatchStream(n, batch, g) for n, g in zip(sizes, self.generators)]
        self.augments = [make_augment(augment) for _ in range(k)]

    def batches(self):
        return _batches(self.streams, self.generators, self.augments, self.images, self.labels, self.offsets,
                        self.spec, self.device)[:2]


def _vmap_forward(stack: Stack, chunk: int | None):
    losses = stacked_loss(stack.base, chunk)
    return lambda x, y: losses(stack.params, stack.buffers, x, y).sum()


def _loop_forward(stack: Stack):
    base = stack.base

    def forward(x, y):
        total = 0
        for i in range(stack.k):
            own = {name: p[i] for name, p in stack.params.items()}
            own_buffers = {name: b[i] for name, b in stack.buffers.items()}
            logits = functional_call(base, (own, own_buffers), (x[i],))
            total = total + F.cross_entropy(logits.float(), y[i])
        return total
    return forward


def time_stack(stack: Stack, forward, steps: int, bf16: bool) -> dict[str, float]:
    """Median ms per step of each part over ``steps`` steps (after two warm-up steps)."""
    parts: dict[str, list[float]] = {"batches": [], "forward+backward": [], "optimizer": []}
    for step in range(steps + 2):
        _sync(stack.device)
        t0 = time.perf_counter()
        x, y = stack.batches()
        _sync(stack.device)
        t1 = time.perf_counter()
        with autocast(stack.device, bf16):
            loss = forward(x, y)
        stack.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _sync(stack.device)
        t2 = time.perf_counter()
        stack.optimizer.step()
        _sync(stack.device)
        t3 = time.perf_counter()
        if step >= 2:
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[name].append(seconds * 1000)
    return {name: statistics.median(values) for name, values in parts.items()}


def time_one_model(spec, images, labels, batch: int, steps: int, device: torch.device, bf16: bool) -> float:
    """Median ms per step of one CNN trained as ``train.fit`` steps it (channels-last, fused Adam)."""
    torch.manual_seed(0)
    net = models.create_model(spec.name, spec=spec, pretrained=False).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    x_all, y_all = images.to(device), labels.to(device)
    generator = torch.Generator().manual_seed(0)
    stream = BatchStream(len(x_all), batch, generator)
    times = []
    for step in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        index = stream.next()[0].to(device)
        x = spec.prepare(x_all[index]).contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            loss = F.cross_entropy(net(x).float(), y_all[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def profile_table(stack: Stack, forward, bf16: bool, rows: int) -> str:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if stack.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            x, y = stack.batches()
            with autocast(stack.device, bf16):
                loss = forward(x, y)
            stack.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stack.optimizer.step()
        _sync(stack.device)
    key = "self_device_time_total" if stack.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.environ.get("MRI_SYNTH_DATA") or (str(SHARED) if SHARED.is_dir()
                                                                                   else "sample"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--k", type=int, default=None, help="stack size (default 32 on CUDA, 4 on the CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 20; quick 2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--augment", default="none", choices=POLICIES)
    parser.add_argument("--rows", type=int, default=15, help="profiler rows")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes: checks that it runs")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    k = args.k or (2 if args.quick else 32 if cuda else 4)
    steps = args.steps or (2 if args.quick else 20)
    batch = 16 if args.quick else args.batch_size
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    data, spec, smallest, largest = cnn_setup(args.source, args.quick)
    sizes = torch.linspace(smallest, largest, k).round().long().tolist() if k > 1 else [smallest]
    images, labels = data.train.images, data.train.labels
    bf16 = default_bf16(device)
    say(f"# stacked_profile  {time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if cuda else "") + f", quick={args.quick}")
    say(f"# cnn {spec.input_size}px, K={k} models, batch {batch}, sets of {smallest}-{largest} images, augment "
        f"{args.augment}, bf16 autocast {bf16}; median ms per step over {steps} steps (2 warm-up steps not counted)")
    one = time_one_model(spec, images, labels, batch, steps, device, bf16)
    say(f"one model (fit's step): {one:8.2f} ms per step; K of them one at a time: {k * one:8.2f} ms")
    variants = [("as fit_stacked", False, False, bf16, lambda s: _vmap_forward(s, None)),
                ("cudnn.benchmark", True, False, bf16, lambda s: _vmap_forward(s, None)),
                ("fp32 (TF32 allowed)", False, True, False, lambda s: _vmap_forward(s, None)),
                ("vmap chunks of 8", False, False, bf16, lambda s: _vmap_forward(s, 8 if k > 8 else max(1, k // 2))),
                ("loop, one backward", False, False, bf16, _loop_forward)]
    for name, benchmark, tf32, use_bf16, make_forward in variants:
        with _backends(benchmark, tf32):
            stack = Stack(spec, k, images, labels, sizes, batch, args.augment, device)
            parts = time_stack(stack, make_forward(stack), steps, use_bf16)
        total = sum(parts.values())
        say(f"{name:22s}: {total:8.2f} ms per step ({'; '.join(f'{p} {v:.2f}' for p, v in parts.items())}); "
            f"{k * one / total:5.2f}x one at a time")
        if cuda:
            say(f"{'':22s}  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
            torch.cuda.reset_peak_memory_stats()
        del stack
    with _backends(False, False):
        stack = Stack(spec, k, images, labels, sizes, batch, args.augment, device)
        say("\n## profiler, as fit_stacked, 3 steps (sorted by self " + ("device" if cuda else "CPU") + " time)")
        say(profile_table(stack, _vmap_forward(stack, None), bf16, args.rows))
    _write(args.out, lines)


if __name__ == "__main__":
    main()
