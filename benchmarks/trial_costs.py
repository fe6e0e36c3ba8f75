"""Measured cost of one study trial and one diffusion generator, for the README's cost model.

    MRI_SYNTH_DATA=../shared/data/alzheimer_mri OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trial_costs.py \
        --out benchmarks/results/trial_costs_cpu.txt
    .venv/bin/python benchmarks/trial_costs.py --quick      # the bundled sample, tiny budgets (a test runs it)

Times, through the study's own code (``trial.run_trial``, ``registry.build``): a CNN trial at equal steps (one
epoch of the 100% pool, evaluation included; the profiles' budgets scale it by their epochs), and the diffusion
generator of one preset trained on a 30% real subset (what one (subset, preset) task of a study costs). Prints
``<what>: <seconds> s (<per-unit>)`` lines and records them with the machine and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mri_synth.data.cache import load_data  # noqa: E402
from mri_synth.study import trial  # noqa: E402
from mri_synth.study import trials as study
from mri_synth.synth import registry  # noqa: E402
from mri_synth.synth.registry import GeneratorSettings  # noqa: E402
from mri_synth.training import heap


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="bundled sample, toy preset: checks that it runs")
    parser.add_argument("--data", default="", help="data source (default: MRI_SYNTH_DATA)")
    parser.add_argument("--preset", default="quick", help="diffusion preset of the generator measured")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-generator", action="store_true")
    parser.add_argument("--out", default="", help="also write the report here")
    args = parser.parse_args(argv)
    heap.retain_freed_memory()
    torch.set_num_threads(args.threads)
    data = load_data("sample" if args.quick else args.data)
    preset = "toy" if args.quick else args.preset
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, threads {args.threads}, load before {os.getloadavg()[0]:.1f}",
             f"data: {data.source} ({len(data.train)} train, {len(data.test)} test)"]
    with tempfile.TemporaryDirectory() as tmp:
        context = trial.StudyContext(data=data, bank_root=Path(tmp) / "bank", generator_root=Path(tmp) / "diffusion",
                                     device="cpu", cpu_threads=args.threads,
                                     generators=GeneratorSettings(diffusion_preset=preset))
        for fraction in (1.0, 0.3):
            spec = study.TrialSpec(arch="cnn", real_fraction=fraction, epochs=1, equal_steps=True, seed=0)
            start = time.perf_counter()
            outcome = trial.run_trial(spec, context)
            seconds = time.perf_counter() - start
            steps = outcome["metrics"]["steps"]
            lines.append(f"cnn trial, {fraction:.0%} real, equal steps, 1 epoch of the pool ({steps:.0f} steps of "
                         f"{spec.batch_size}): {seconds:.1f} s ({seconds / steps * 1000:.1f} ms/step, evaluation "
                         "included)")
        if not args.skip_generator:
            subset = context.evaluation(spec).real_subset(0.3, 0)
            settings = context.generator_settings(study.TrialSpec(real_fraction=0.3, synthetic="diffusion",
                                                                  synthetic_fraction=0.7, generator=preset))
            start = time.perf_counter()
            registry.build("diffusion", settings, subset, seed=0)
            seconds = time.perf_counter() - start
            lines.append(f"diffusion generator, preset {preset}, trained on a 30% subset ({len(subset)} slices): "
                         f"{seconds:.1f} s")
    lines.append(f"load after {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
