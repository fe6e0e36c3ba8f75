"""The GPU check's Python parts: environment, lazy imports, training throughput, a small grid through the runner.

    PYTHONPATH=. python benchmarks/gpu_check.py PART --report DIR [--device cuda] [--quick]

PART is one of ``env``, ``imports``, ``throughput``, ``concurrent``, ``grid``; each writes ``DIR/<part>.txt`` (and the
grid its results folder ``DIR/grid``). ``benchmarks/gpu_check.sh`` runs them in order with the CUDA tests and the
stacked benchmark; ``--quick`` (tiny sizes, the CPU) is what ``tests/test_gpu_check.py`` runs so the script cannot rot.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# absent on the GPU machines; the core must not need them
OPTIONAL = ("datasets", "diffusers", "openai", "papermill", "ray")

BLOCKER = f"""
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the GPU check)", name=name)
sys.meta_path.insert(0, Blocked())
"""

IMPORTS = BLOCKER + """
import mri_synth.cli, mri_synth.chapters.training, mri_synth.study.runner, mri_synth.training.stacked
import mri_synth.study.trial_groups, mri_synth.study.distributed
from mri_synth.study import trial, trials
from mri_synth.data.cache import load_data
data = load_data("sample")
context = trial.StudyContext(data=data, device="cpu", cpu_threads=1)
outcome = trial.run_trial(trials.TrialSpec(real_fraction=0.3, epochs=1, batch_size=32, input_size=32), context)
print(f"sample: {len(data.train)} train, {len(data.test)} test; a trial without them: test_loss "
      f"{outcome['metrics']['test_loss']:.4f}")
print("loaded optional modules:", sorted(m for m in sys.modules if m.split('.')[0] in OPTIONAL_NAMES) or "none")
""".replace("OPTIONAL_NAMES", repr(OPTIONAL))


def env(args: argparse.Namespace) -> list[str]:
    import torch

    lines = [f"python {platform.python_version()}, torch {torch.__version__}, cuda available "
             f"{torch.cuda.is_available()}", f"machine {platform.machine()}, {os.cpu_count()} cpus"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"device {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                     f"{torch.cuda.device_count()} device(s)")
    for name in ("torchvision", "timm", "pandas", "pyarrow", "sklearn", "torchmetrics", *OPTIONAL):
        spec = importlib.util.find_spec(name)
        version = ""
        if spec is not None:
            try:
                version = getattr(__import__(name), "__version__", "?")
            except Exception as err:  # present but broken: say so
                version = f"import fails: {type(err).__name__}: {err}"
        lines.append(f"{name}: {version or 'absent'}")
    return lines


def imports(args: argparse.Namespace) -> list[str]:
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"the core needs an optional module:\n{done.stderr[-3000:]}")
    return ["core imports, the bundled sample and a CPU trial work without " + ", ".join(OPTIONAL),
            *done.stdout.strip().splitlines()]


def _rate(arch: str, size: int, batch: int, steps: int, device: str, data, compile: bool = False) -> str:
    import torch

    from mri_synth.training.fit import fit
    from mri_synth.training.models import get_spec, tiny_model
    from mri_synth.training.settings import TrainConfig

    spec = tiny_model(arch)[1] if size < 64 else get_spec(arch).with_input_size(size)
    config = TrainConfig(max_steps=steps, batch_size=batch, device=device, progress=False, compile=compile)
    test = data.test.subset(range(min(64, len(data.test))))
    fit(arch, data.train.images, data.train.labels, test.images, test.labels, replace(config, max_steps=2), spec=spec,
        pretrained=False)  # warm-up: kernels chosen, memory allocated
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fit(arch, data.train.images, data.train.labels, test.images, test.labels, config, spec=spec, pretrained=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return (f"{arch} {spec.input_size}px batch {batch}: {steps * batch / seconds:.0f} img/s "
            f"({seconds / steps * 1000:.1f} ms/step over {steps} steps, one evaluation of {len(test)} included)")


def throughput(args: argparse.Namespace) -> list[str]:
    from mri_synth.data.cache import load_data

    data = load_data("sample" if args.quick else os.environ.get("MRI_SYNTH_DATA") or "sample")
    steps = 3 if args.quick else 100
    lines = [f"data {data.source} ({len(data.train)} train)"]
    for arch, size, batch in (("cnn", 128, 64), ("resnet18", 224, 64), ("vit", 224, 32)):
        lines.append(_rate(arch, 32 if args.quick else size, 8 if args.quick else batch, steps, args.device, data))
        print(lines[-1], flush=True)
    try:
        from mri_synth.synth.diffusion import DiffusionConfig, DiffusionGenerator
    except ImportError as err:
        lines.append(f"diffusion generator: SKIPPED, diffusers cannot be imported ({err}); run "
                     "benchmarks/gpu_wheels.sh here and carry benchmarks/wheels: gpu_check.sh installs them")
        return lines

    config = DiffusionConfig.preset("toy" if args.quick else "gpu", train_steps=3 if args.quick else 100)
    sub = data.train.subset(range(min(len(data.train), 512)))
    start = time.perf_counter()
    DiffusionGenerator(config, device=args.device).train(sub.images, sub.labels, sub.ids, seed=0, progress=False)
    seconds = time.perf_counter() - start
    lines.append(f"diffusion generator ({'toy' if args.quick else 'gpu'} preset, {config.image_size}px, batch "
                 f"{config.batch_size}): {config.train_steps * config.batch_size / seconds:.0f} img/s "
                 f"({seconds / config.train_steps * 1000:.1f} ms/step over {config.train_steps} steps; the preset "
                 f"trains {DiffusionConfig.preset('gpu').train_steps} steps)")
    print(lines[-1], flush=True)
    lines += _latent_rates(args, sub)
    return lines


def _latent_rates(args: argparse.Namespace, sub) -> list[str]:
    """The latent generator's two training stages and its variations, timed; the full preset's time projected."""
    import torch

    from mri_synth.synth.latent import LatentDiffusionConfig, LatentDiffusionGenerator

    name = "toy" if args.quick else "gpu"
    steps = 3 if args.quick else 150
    full = LatentDiffusionConfig.preset(name)
    config = LatentDiffusionConfig.preset(name, ae_steps=steps, train_steps=steps)
    generator = LatentDiffusionGenerator(config, device=args.device)
    generator.train(sub.images, sub.labels, sub.ids, seed=0, progress=False)
    ae = config.ae_steps * config.ae_batch_size / generator.seconds["autoencoder"]
    unet = config.train_steps * config.batch_size / generator.seconds["unet"]  # includes encoding the subset once
    n = min(len(sub), 256)
    start = time.perf_counter()
    generator.vary(sub.images[:n], sub.labels[:n], list(range(n)), strength=config.strength)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    vary = time.perf_counter() - start
    projected = full.ae_steps * full.ae_batch_size / ae + full.train_steps * full.batch_size / unet
    return [f"latent generator ({name} preset, {config.ddim_steps} DDIM steps): autoencoder {ae:.0f} img/s, latent "
            f"UNet {unet:.0f} img/s over {steps} steps each (first steps included); {n} variations in {vary:.1f} s "
            f"({100 * vary / n:.2f} s per 100); the full preset ({full.ae_steps} + {full.train_steps} steps) projects "
            f"to {projected / 60:.1f} minutes of training"]


def grid(args: argparse.Namespace) -> list[str]:
    import json

    from mri_synth.data.cache import load_data
    from mri_synth.study import runner, trial
    from mri_synth.study import trials as study

    data = load_data("sample" if args.quick else os.environ.get("MRI_SYNTH_DATA") or "sample")
    context = trial.StudyContext(data=data, device=args.device, bank_root=Path(args.report) / "bank",
                                 generator_root=Path(args.report) / "generators")
    seeds = range(2) if args.quick else range(8)
    specs = study.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat", "autoaugment@0.3"], seeds, epochs=1,
                             equal_steps=True, batch_size=32 if args.quick else 64,
                             input_size=32 if args.quick else 0)
    start = time.perf_counter()
    results, _ = runner.run_study(specs, context, Path(args.report) / "grid", progress=False)
    seconds = time.perf_counter() - start
    stacks = [json.loads(p.read_text())["provenance"].get("stacked", 1)
              for p in (Path(args.report) / "grid" / "trials").glob("*.json")]
    loss = results[results.metric == "test_loss"].groupby("policy", sort=False).value.median()
    return [f"grid: {len(specs)} cnn trials (equal steps, 1 epoch of the pool) on {data.source}, device "
            f"{args.device}: {seconds:.1f} s, {seconds / len(specs):.2f} s per trial; stack sizes "
            f"{sorted(set(stacks))}",
            *[f"  median test_loss {policy}: {value:.4f}" for policy, value in loss.items()]]


def options(args: argparse.Namespace) -> list[str]:
    """What could make a trial or a generator cheaper on the device: torch.compile, and the latent cpu preset."""
    from mri_synth.data.cache import load_data

    data = load_data("sample" if args.quick else os.environ.get("MRI_SYNTH_DATA") or "sample", subjects=False)
    steps = 3 if args.quick else 300
    lines = []
    for compiled in (False, True):
        lines.append(("torch.compile " if compiled else "eager ") + _rate("cnn", 32 if args.quick else 128,
                                                                          8 if args.quick else 64, steps, args.device,
                                                                          data, compile=compiled))
        print(lines[-1], flush=True)
    sub = data.train.subset(range(min(len(data.train), 1536)))
    from mri_synth.synth.latent import LatentDiffusionConfig, LatentDiffusionGenerator

    full = LatentDiffusionConfig.preset("toy" if args.quick else "cpu")
    generator = LatentDiffusionGenerator(full, device=args.device)
    generator.train(sub.images, sub.labels, sub.ids, seed=0, progress=False)
    lines.append(f"latent {'toy' if args.quick else 'cpu'} preset trained whole on {args.device}: autoencoder "
                 f"{generator.seconds['autoencoder']:.1f} s ({full.ae_steps} steps), "
                 f"UNet {generator.seconds['unet']:.1f} s ({full.train_steps} steps), on {len(sub)} slices")
    return lines


def _trials(args: argparse.Namespace):
    """The stacked benchmark's trials (sets of 1,536-5,120 slices, own seeds), its config and held-out images."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from stacked_throughput import LARGEST, SMALLEST, make_trials

    from mri_synth.data.cache import load_data
    from mri_synth.training.models import get_spec, tiny_model
    from mri_synth.training.settings import TrainConfig

    data = load_data("sample" if args.quick else os.environ.get("MRI_SYNTH_DATA") or "sample", subjects=False)
    spec = tiny_model("cnn")[1] if args.quick else get_spec("cnn")
    sizes = (40, 80) if args.quick else (SMALLEST, min(LARGEST, len(data.train)))
    trials = make_trials(data.train.images, data.train.labels, args.total, "none", *sizes)
    config = TrainConfig(max_steps=2 if args.quick else 30, batch_size=16 if args.quick else 64, device=args.device,
                         progress=False)
    return trials, config, spec, data.test.subset(range(min(128, len(data.test))))


def worker(args: argparse.Namespace) -> list[str]:
    """One of ``--procs`` processes: warm up, wait for the others, train its share of the trials one at a time."""
    import json

    import torch

    from mri_synth.training.fit import fit
    from mri_synth.training.stacked import trial_config

    trials, config, spec, test = _trials(args)
    mine = trials[args.rank::args.procs]
    run = lambda trial, cfg: fit("cnn", trial.train_images, trial.train_labels, test.images, test.labels,  # noqa: E731
                                 cfg, spec=spec, pretrained=False)
    run(mine[0], replace(trial_config(config, mine[0]), max_steps=2))  # warm-up: CUDA context, kernels chosen
    folder = Path(args.report) / "concurrent_runs"
    (folder / f"ready{args.rank}").touch()
    deadline = time.time() + 120
    while len(list(folder.glob("ready*"))) < args.procs and time.time() < deadline:
        time.sleep(0.01)
    start = time.time()
    for trial in mine:
        run(trial, trial_config(config, trial))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    (folder / f"times{args.rank}.json").write_text(json.dumps({"start": start, "end": time.time(), "n": len(mine)}))
    return []


def concurrent(args: argparse.Namespace) -> list[str]:
    """The same trials one at a time in 1, then P processes sharing the device: what Ray's fractional GPUs give."""
    import json
    import shutil

    lines = [f"{args.total} cnn trials (30 steps, batch 64, sets of 1,536-5,120 slices, one evaluation each), one at a "
             f"time in each of P processes sharing one {args.device} device; wall time from the first process's "
             "start to the last one's end, after every process has warmed up"]
    base = None
    for procs in [int(p) for p in args.procs_list.split(",")]:
        folder = Path(args.report) / "concurrent_runs"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        command = [sys.executable, __file__, "worker", "--report", args.report, "--device", args.device,
                   "--total", str(args.total), "--procs", str(procs)] + (["--quick"] if args.quick else [])
        running = [subprocess.Popen(command + ["--rank", str(r)], env={**os.environ, "OMP_NUM_THREADS": "1"})
                   for r in range(procs)]
        if any(p.wait() for p in running):
            raise SystemExit(f"a worker failed with {procs} processes")
        times = [json.loads(f.read_text()) for f in folder.glob("times*.json")]
        wall = max(t["end"] for t in times) - min(t["start"] for t in times)
        base = base or wall
        lines.append(f"P={procs:3d}: {wall:6.2f} s, {args.total / wall:6.1f} trials/s, {base / wall:5.2f}x one process")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("env", "imports", "throughput", "grid", "concurrent", "worker", "options"))
    parser.add_argument("--report", required=True, help="the report folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--total", type=int, default=32, help="concurrent: trials in all")
    parser.add_argument("--procs-list", default="1,4,8,16", help="concurrent: the process counts to time")
    parser.add_argument("--procs", type=int, default=1, help="worker: how many processes share the trials")
    parser.add_argument("--rank", type=int, default=0, help="worker: this process's share")
    args = parser.parse_args(argv)
    Path(args.report).mkdir(parents=True, exist_ok=True)
    lines = globals()[args.part](args)
    if args.part == "worker":
        return
    (Path(args.report) / f"{args.part}.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
