"""What each profile costs: its trials and generators counted from ``profiles/``, times per step from measurements.

    .venv/bin/python benchmarks/profile_costs.py [--out benchmarks/results/profile_costs.txt]

Trials are counted as the notebooks build them (``mri_synth.notebooks.profile_study``: each training notebook's own
defaults under the profile's ``common`` and section, the builder ``mri-synth study --profile`` uses too); generators
as one per (evaluation, fold, real subset, generator label), which is how the study trains and caches them. A trial's
steps follow its budget (epochs of its own training set, or of the 100% pool with equal steps); set sizes use the
thesis split's class counts with the 15% validation carve (an estimate: the exact sizes round per class). Per-step
times: CPU rates measured on the development machine (sources beside each); Sizes are scaled to a profile's input size
by pixel count. H100 rates are the ones ``benchmarks/gpu_check.sh`` measured on one
(``benchmarks/results/gpu_check_h100/``), except the small generator presets, which are marked as assumed.
Evaluation passes are not counted (one per epoch: a few % of a trial).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mri_synth.notebooks import ARCH_NOTEBOOKS, PROFILE_DIR, load_profile, profile_study, trained_arch  # noqa: E402
from mri_synth.study.trials import CONTROL_ARMS  # noqa: E402
from mri_synth.synth import registry  # noqa: E402

TRAIN_COUNTS = {"Mild_Demented": 724, "Moderate_Demented": 49, "Non_Demented": 2566, "Very_Mild_Demented": 1781}
POOL = {c: n - round(0.15 * n) for c, n in TRAIN_COUNTS.items()}  # after the validation carve (slice mode)
# seconds per optimizer step at batch 64 (the ViT's batch-32 rate doubled)
CPU_STEP_S = {
    "cnn": 0.182,  # benchmarks/results/trial_costs_cpu.txt: 100% real, equal steps, 1 thread, evaluation included
    "resnet18": 64 / 56.1,  # benchmarks/results/train_throughput_cpu_idle_resnet18_vit.txt: 56.1 img/s at 224 px
    "vit": 64 / 6.2,  # same file: ViT-B/16 6.2 img/s at 224 px
}
# measured at the input size a profile runs, used there instead of the pixel scaling (which prices small inputs far
# too cheaply: ResNet-18 at 64 px scaled from 224 px came to 2.1 CPU-hours for the rerun's 80 trials, its recorded
# trials take about 13)
CPU_STEP_AT = {
    ("resnet18", 64): 0.612,  # arch_trial_cost_cpu_resnet18_64px.txt: bf16 channels-last, two other runs on the 2
    #                            cores (an upper bound); the rerun's slice trials took 0.49-0.69 s a step
    ("vit_tiny", 64): 1246 / 2720,  # tuning trial 642c12f43c971415 (tuning/vit_tiny/slice): 40 epochs, 2,720 steps
    #                                  in 1,246 s with one other 1-thread run on the 2 cores, evaluation included
}
# ViT-Tiny/16 at other sizes: its 64 px rate scaled to 224 px by pixel count like the others
# (arch_trial_cost_cpu_10ep.txt: its 128 px step, 2,301 ms, is 3.4x its 64 px one, 680 ms; the pixel count says 4x)
CPU_STEP_S["vit_tiny"] = CPU_STEP_AT["vit_tiny", 64] / (64 / 224) ** 2
# measured on one H100 (benchmarks/results/gpu_check_h100/): bf16, seconds per batch-64 model-step
H100_STEP_S = {
    "cnn": 1.52 / (32 * 30),  # concurrent.txt: 32 trials x 30 steps in 1.52 s, 8 processes sharing the GPU (Ray's
    #                           default share of 0.125); one at a time 4.62 s (3.0x slower), a stack of 32 2.74 s
    "resnet18": 64 / 4733,  # throughput.txt: 4,733 img/s at 224 px, one at a time
    "vit": 64 / 771,  # throughput.txt: ViT-B/16 771 img/s at 224 px (batch 32), one at a time
    # ASSUMED (not run there): ViT-B/16's rate times their compute ratio (timm's model cards: 1.1 against 16.9 GMACs
    # at 224 px); optimistic for a model this small, which fills less of the GPU
    "vit_tiny": 64 / 771 * 1.1 / 16.9,
}
CPU_GENERATOR_S = {"quick": 152.8, "toy": 5.0, "latent-cpu": 17.96 * 60}  # trial_costs_cpu.txt (quick, 30% subset);
#                                                       toy: seconds; latent-cpu: results/latent_fidelity.md, 1 thread
CPU_GENERATOR_S["latent-cpu-fast"] = CPU_GENERATOR_S["latent-cpu"]  # the same training: only sampling differs
H100_GENERATOR_S = {  # measured on the H100 (throughput.txt, options.txt) except where marked
    "gpu": 20_000 * 64 / 336,  # pixel gpu preset: 336 img/s, 20,000 steps of 64: 64 minutes
    "latent-gpu": 6438,  # autoencoder 466 img/s, UNet 505 img/s over 20,000 x 32 + 40,000 x 64 images: 107 minutes
    "latent-cpu": 17 + 26 * 1100 / 600,  # measured 17 s + 26 s for the 600-step UNet; its UNet now takes 1,100
    "quick": 300 / 50, "toy": 40 / 50, "latent-toy": 5,  # ASSUMED (not run there): seconds
}
H100_GENERATOR_S["latent-cpu-fast"] = H100_GENERATOR_S["latent-cpu"]


def pool_counts(data_source: str) -> dict[str, int]:
    """Pool images per class: the bundled sample's own (it is small), else the thesis split's."""
    if data_source != "sample":
        return POOL
    from mri_synth.data.cache import load_data
    from mri_synth.data.types import CLASS_NAMES

    counts = load_data("sample", subjects=False).train.labels.bincount(minlength=len(CLASS_NAMES)).tolist()
    return {c: n - round(0.15 * n) for c, n in zip(CLASS_NAMES, counts)}


def set_size(spec, pool: dict[str, int]) -> int:
    """Training images of a trial: its real share of the pool plus its synthetic (or repeated) images."""
    chosen = set(spec.synthetic_classes or pool)
    real = sum(round(spec.real_fraction * n) for n in pool.values())
    return real + sum(round(spec.synthetic_fraction * n) for c, n in pool.items() if c in chosen)


def steps(spec, pool: dict[str, int]) -> int:
    if spec.max_steps:
        return spec.max_steps
    images = sum(pool.values()) if spec.equal_steps else set_size(spec, pool)
    return spec.epochs * math.ceil(images / spec.batch_size)


def pixels(spec) -> float:
    """A step's cost relative to the measured input size (the rates are per image of 128 px CNN, 224 px others)."""
    full = 128 if spec.arch == "cnn" else 224
    return ((spec.input_size or full) / full) ** 2


def profile_rows(name: str) -> list[dict]:
    profile = load_profile(name)
    rows, generators = [], set()
    for notebook in ARCH_NOTEBOOKS:
        if notebook not in profile["notebooks"]:
            continue
        arch = trained_arch(profile, notebook)
        config = profile_study(name, arch)  # the grid the notebook runs
        pool = pool_counts(config.data_source)
        # in batch-64 steps at the measured input size
        step_count = sum(steps(s, pool) * s.batch_size / 64 * pixels(s) for s in config.specs)
        cpu_s = sum(steps(s, pool) * s.batch_size / 64 * CPU_STEP_AT.get((arch, s.input_size),
                                                                          pixels(s) * CPU_STEP_S[arch])
                    for s in config.specs)
        for s in config.specs:
            if s.synthetic not in CONTROL_ARMS and registry.get(s.synthetic).learns_from_subset:
                generators.add((s.split, s.fold, s.real_fraction, s.seed, s.synthetic, s.generator))
        rows.append(dict(profile=name, what=f"{arch} trials", count=len(config.specs), steps=step_count,
                         cpu_h=cpu_s / 3600, h100_h=step_count * H100_STEP_S[arch] / 3600))
    presets = Counter(label.split(":")[0] for *_, label in generators)
    for preset, count in presets.items():
        cpu = CPU_GENERATOR_S.get(preset)
        rows.append(dict(profile=name, what=f"diffusion generators ({preset})", count=count, steps=0,
                         cpu_h=count * cpu / 3600 if cpu else math.nan,
                         h100_h=count * H100_GENERATOR_S[preset] / 3600))
    return rows


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="")
    parser.add_argument("--working-day-h", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=10,
                        help="also cost a profile of more repeats at this many per setting (the real profile's 10)")
    args = parser.parse_args(argv)
    lines = [f"{'profile':9s} {'what':40s} {'count':>6s} {'steps':>10s} {'CPU h':>9s} {'H100 h':>17s}"]
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        rows = profile_rows(path.stem)
        for r in rows:
            lines.append(f"{r['profile']:9s} {r['what']:40s} {r['count']:6d} {r['steps']:10.0f} {r['cpu_h']:9.1f} "
                         f"{r['h100_h']:17.1f}")
        cpu, gpu = sum(r["cpu_h"] for r in rows if not math.isnan(r["cpu_h"])), sum(r["h100_h"] for r in rows)
        gpus = math.ceil(gpu / args.working_day_h)
        lines.append(f"{path.stem:9s} {'TOTAL':40s} {'':6s} {'':10s} {cpu:9.1f} {gpu:17.1f}   -> {gpus} H100(s) "
                     f"for a {args.working_day_h:.0f} h day")
        made = [r for r in rows if r["what"].startswith("diffusion generators")]
        if made and any(r["h100_h"] > 1 for r in made):  # the same study with the cheapest measured generator
            alt = (gpu - sum(r["h100_h"] for r in made)
                   + sum(r["count"] for r in made) * H100_GENERATOR_S["latent-cpu"] / 3600)
            lines.append(f"{path.stem:9s} {'TOTAL, latent-cpu generators':40s} {'':6s} {'':10s} {'':9s} {alt:17.1f}   "
                         f"-> {math.ceil(alt / args.working_day_h)} H100(s) for a {args.working_day_h:.0f} h day")
            # every trial and generator belongs to one repeat, so the cost scales with the repeats exactly
            n_seeds = int((load_profile(path.stem).get("common") or {}).get("n_seeds") or 0)
            if n_seeds > args.repeats:
                fewer = alt * args.repeats / n_seeds
                what = f"the same at {args.repeats} of {n_seeds} repeats"
                lines.append(f"{path.stem:9s} {what:40s} {'':6s} {'':10s} {'':9s} {fewer:17.1f}   -> "
                             f"{math.ceil(fewer / args.working_day_h)} H100(s) for a {args.working_day_h:.0f} h day")
    lines.append("steps: batch-64 steps at the measured input size. CPU: 1-2 threads of the 2-core development "
                 "machine; its TOTAL leaves out nan rows (the gpu diffusion preset is not run on a CPU). H100: rates "
                 "measured by benchmarks/gpu_check.sh on one H100 (benchmarks/results/gpu_check_h100/); CNN trials 8 "
                 "to a GPU through Ray's fractional shares.")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
