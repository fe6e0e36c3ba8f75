"""The latent generator's faster samplers against ``latent-cpu``'s DDIM: seconds per variation at equal fidelity.

    MRI_SYNTH_DATA=../shared/data/alzheimer_mri OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_sampler.py \
        --repeat 0 --out benchmarks/results/latent_sampler_r0      # and --repeat 1 (two processes side by side)
    .venv/bin/python benchmarks/latent_sampler.py --merge benchmarks/results/latent_sampler_r0.csv \
        benchmarks/results/latent_sampler_r1.csv --out benchmarks/results/latent_sampler   # the table and verdict

Protocol (issue 22), one thread throughout, per repeat r (the study's own 30% subsets: ``slice`` evaluation, repeat
r, the generator ``registry.build`` trains for those trials, found in the cache when trained before):
- the weights are ``latent-cpu``'s; every candidate samples the same weights (sampling settings never key them);
- the feature space is ``latent_fidelity.py``'s: a basic CNN trained 30 epochs on half of the training slices the
  generator never saw, its checkpoint chosen on a selection set of 300 others, the rest the reference (FD/KID space,
  label-fidelity classifier, real-vs-real floor);
- every candidate varies every subset slice once (the same seeds), at the preset's strength (0.55); the presets run
  chunk by chunk in turn, so their CPU seconds are measured side by side on the same machine state;
- "equal fidelity" (the issue's definition): FD within 10% of ``latent-cpu``'s, label fidelity within 0.02, and the
  copy test passed (median SSIM to the source below the median adjacent-slice SSIM).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from latent_fidelity import feature_space, markdown, split  # noqa: E402

from mri_synth.analysis import fidelity  # noqa: E402
from mri_synth.data.cache import load_data  # noqa: E402
from mri_synth.study.trial import StudyContext  # noqa: E402
from mri_synth.study.trials import TrialSpec  # noqa: E402
from mri_synth.synth import registry  # noqa: E402
from mri_synth.synth.base import variant_seed  # noqa: E402

CANDIDATES = {  # name: (preset, overrides of its sampling settings)
    "latent-cpu (DDIM 25)": ("latent-cpu", {}),
    "latent-cpu-fast (UniPC 5)": ("latent-cpu-fast", {}),
    "DPM-Solver++ 5": ("latent-cpu-fast", {"sampler": "dpm++"}),
    "UniPC 4": ("latent-cpu-fast", {"ddim_steps": 4}),
    "DPM-Solver++ 7, autoencoder on 64": ("latent-cpu-fast", {"sampler": "dpm++", "ddim_steps": 7, "sample_batch": 64}),
}
BASELINE = "latent-cpu (DDIM 25)"
COPY = "median SSIM to source (floor: adjacent slice)"


def generator_of(context: StudyContext, subset, repeat: int, preset: str, overrides: dict):
    """The generator the study's trials of this repeat use (the same cache), with ``overrides`` of its sampling."""
    spec = TrialSpec(real_fraction=0.3, synthetic="diffusion", synthetic_fraction=0.7, seed=repeat, generator=preset)
    settings = context.generator_settings(spec)
    settings = replace(settings, diffusion_overrides=tuple(overrides.items()))
    return registry.build("diffusion", settings, subset, seed=repeat)


def tiny(candidate: tuple[str, dict]) -> tuple[str, dict]:
    """The same candidate on the toy preset (seconds to train): the fast preset's sampling settings spelt out."""
    preset, overrides = candidate
    fast = {"sampler": "unipc", "ddim_steps": 5, "channels_last": True, "sample_batch": 8} \
        if preset.endswith("-fast") else {}
    return "latent-toy", {**fast, **overrides}


def measure(args: argparse.Namespace) -> pd.DataFrame:
    torch.set_num_threads(1)
    data = load_data(args.source)
    context = StudyContext(data=data, device="cpu", cpu_threads=1)
    spec = TrialSpec(real_fraction=0.3, seed=args.repeat)
    subset = context.evaluation(spec).real_subset(0.3, args.repeat)
    rest = torch.ones(len(data.train), dtype=torch.bool)
    rest[torch.tensor([data.train.ids.index(i) for i in subset.ids])] = False
    held = data.train.subset(torch.nonzero(rest).flatten())  # training slices the generator never saw
    feat_idx, rest_idx = split(held.labels, 0.5, args.repeat + 1)
    others = held.subset(rest_idx)
    sel_idx, ref_idx = split(others.labels, args.selection / len(others), args.repeat + 2)
    selection, reference = others.subset(sel_idx), others.subset(ref_idx)
    features, _ = feature_space(held.subset(feat_idx), selection, reference, args.feature_epochs, args.repeat)
    if args.tiny:
        subset = subset.subset(torch.arange(min(len(subset), 48)))
    generators = {name: generator_of(context, subset, args.repeat, *tiny(CANDIDATES[name]) if args.tiny
                                     else CANDIDATES[name]) for name in args.candidates}
    seeds = [variant_seed(args.repeat, i, 0) for i in subset.ids]
    made = {name: [] for name in generators}
    cpu = dict.fromkeys(generators, 0.0)
    for start in range(0, len(subset), args.chunk):  # in turn, chunk by chunk: side by side on one machine state
        part = slice(start, start + args.chunk)
        for name, generator in generators.items():
            clock = time.process_time()
            made[name].append(generator.vary(subset.images[part], subset.labels[part], seeds[part]))
            cpu[name] += time.process_time() - clock
    rows = []
    for name, generator in generators.items():
        images = torch.cat(made[name])
        report = fidelity.fidelity_report(features, reference.images, reference.labels, images, subset.labels,
                                          subset.ids, subset.images, subset.labels, subset.ids, seed=args.repeat)
        r = report.set_index("metric")
        c = generator.config
        rows.append({"repeat": args.repeat, "candidate": name, "sampler": c.sampler, "steps": c.ddim_steps,
                     "model evaluations": max(1, round(c.ddim_steps * c.strength)), "strength": c.strength,
                     "variations": len(images), "cpu_s_per_100": 100 * cpu[name] / len(images),
                     "FD": r.loc["FD", "value"], "FD floor": r.loc["FD", "floor"],
                     "label fidelity": r.loc["label fidelity", "value"],
                     "SSIM to source": r.loc[COPY, "value"], "adjacent SSIM": r.loc[COPY, "floor"],
                     "generator trained on": generator.provenance.get("device", ""),
                     "training CPU min": sum(v for k, v in generator.seconds.items() if k.endswith("_cpu")) / 60})
    return pd.DataFrame(rows)


def verdict(table: pd.DataFrame) -> pd.DataFrame:
    """Each candidate's speed-up and fidelity against the baseline of the same repeat, and whether it passes."""
    base = table[table.candidate == BASELINE].set_index("repeat")
    out = table.copy()
    out["speed-up"] = out.repeat.map(base.cpu_s_per_100) / out.cpu_s_per_100
    out["FD / baseline"] = out.FD / out.repeat.map(base.FD)
    out["label fidelity - baseline"] = out["label fidelity"] - out.repeat.map(base["label fidelity"])
    out["copy test passed"] = out["SSIM to source"] < out["adjacent SSIM"]
    out["equal fidelity"] = ((out["FD / baseline"] - 1).abs() <= 0.10) & \
        (out["label fidelity - baseline"].abs() <= 0.02) & out["copy test passed"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.environ.get("MRI_SYNTH_DATA", ""))
    parser.add_argument("--repeat", type=int, default=0, help="the study's repeat whose 30%% subset to use")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--selection", type=int, default=300)
    parser.add_argument("--feature-epochs", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=64, help="sources varied by each candidate in turn")
    parser.add_argument("--tiny", action="store_true", help="the bundled sample, a 1-epoch feature CNN, 48 "
                        "variations: an end-to-end check (its numbers mean nothing)")
    parser.add_argument("--merge", nargs="*", default=None, help="CSV files of measured repeats to tabulate")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latent_sampler"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge is None:
        if args.tiny:
            args.source, args.feature_epochs, args.selection = args.source or "sample", 1, 20
        if not args.source:
            parser.error("set MRI_SYNTH_DATA (or --source) to the dataset folder")
        table = measure(args)
        table.to_csv(f"{out}.csv", index=False)
        print(table.to_string(index=False))
        return
    table = verdict(pd.concat([pd.read_csv(f) for f in args.merge], ignore_index=True))
    table.to_csv(f"{out}.csv", index=False)
    shown = table[["repeat", "candidate", "model evaluations", "cpu_s_per_100", "speed-up", "FD", "FD / baseline",
                   "label fidelity", "label fidelity - baseline", "SSIM to source", "adjacent SSIM",
                   "copy test passed", "equal fidelity"]]
    passing = table[table["equal fidelity"]].groupby("candidate")["speed-up"].agg(["min", "count"])
    both = passing[passing["count"] == table.repeat.nunique()].sort_values("min", ascending=False)
    lines = ["# Faster sampling of the latent generator (issue 22)", "",
             "Made by `benchmarks/latent_sampler.py` (its docstring has the commands) on the 2-core development CPU: "
             "one thread per process, the two repeats in two processes side by side, every candidate timed chunk by "
             "chunk in turn with the others (CPU seconds per 100 variations).", "", markdown(shown), "",
             f"Candidates at equal fidelity on every repeat ({table.repeat.nunique()}), slowest speed-up first: "
             + (", ".join(f"{n} {v:.2f}x" for n, v in both["min"].items()) or "none"), "",
             "The baseline's own copy test, per repeat: " + "; ".join(
                 f"repeat {r['repeat']}: SSIM to source {r['SSIM to source']:.3f} vs adjacent "
                 f"{r['adjacent SSIM']:.3f}, "
                 + ("passed" if r["copy test passed"] else "not passed")
                 for _, r in table[table.candidate == BASELINE].iterrows())
             + " (equal fidelity asks a candidate to pass it, whatever the baseline does).", "",
             "Generators: " + "; ".join(sorted({f"repeat {r['repeat']}: trained on {r['generator trained on']}, "
                                                 f"{r['training CPU min']:.1f} CPU min" for _, r in
                                                 table[table.candidate == BASELINE].iterrows()}))]
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
