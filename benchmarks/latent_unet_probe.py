"""Iterate on the latent UNet alone: reuse a trained autoencoder, retrain only the UNet with config overrides, and
score its variations with the frozen feature CNN of ``latent_fidelity.py`` (same splits, seed 0).

    MRI_SYNTH_CACHE=/tmp/gen-cache OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_unet_probe.py \
        --generator <saved latent generator folder> --features <torch.save'd feature CNN> \
        [--retrain train_steps=1200 prediction_type=v_prediction ...] [--strengths 0.2,0.3,0.45] [--final]

A probe, not the benchmark: the UNet's RNG stream differs from a whole training run's (the autoencoder's draws are
skipped), and the recorded numbers come from ``latent_fidelity.py``.
"""
import argparse
import ast
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latent_fidelity as lf  # noqa: E402

from mri_synth.analysis import fidelity, memorisation  # noqa: E402
from mri_synth.synth.base import variant_seed  # noqa: E402
from mri_synth.synth.latent import LatentDiffusionGenerator  # noqa: E402
from mri_synth.synth.trained import to_model  # noqa: E402
from mri_synth.training.models import get_spec  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--source", default="/work/shared/data/alzheimer_mri")
parser.add_argument("--generator", required=True)
parser.add_argument("--features", required=True)
parser.add_argument("--retrain", nargs="*", default=None, help="key=value overrides of the config; UNet retrained")
parser.add_argument("--strengths", default="0.2,0.3,0.45")
parser.add_argument("--final", action="store_true", help="also score one variation per subset slice")
parser.add_argument("--save", default=None)
parser.add_argument("--guidance", default="1", help="guidance scales to score (the last one is used by --final)")
parser.add_argument("--final-strength", type=float, default=None, help="score the subset at this strength instead")
args = parser.parse_args()
torch.set_num_threads(1)
subset, feature_set, selection, reference = lf.splits(args.source, 0, 300)
features = fidelity.PenultimateFeatures(torch.load(args.features, weights_only=False).eval(), get_spec("cnn"))
g = LatentDiffusionGenerator.load(args.generator, device="cpu", cpu_threads=1)
if args.retrain is not None:
    overrides = {}
    for kv in args.retrain:
        k, v = kv.split("=", 1)
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    g.config = replace(g.config, **overrides)
    print("config", g.config, flush=True)
    with g._threads():
        g._train_unet(to_model(subset.images, 128, g.device), subset.labels, 0, torch.Generator().manual_seed(0),
                      progress=False)
    print(f"unet CPU min {g.seconds['unet_cpu'] / 60:.2f}, loss last 50 {sum(g.losses[-50:]) / 50:.4f}", flush=True)
    if args.save:
        g.save(args.save)
sel_seeds = [variant_seed(0, i, 0) for i in selection.ids]
strengths = [float(s) for s in args.strengths.split(",")]
adjacent = memorisation.median_adjacent_ssim(subset.images, subset.labels)
for w in [float(v) for v in args.guidance.split(",")]:
    g.config = replace(g.config, guidance_scale=w)
    chosen, table = fidelity.select_strength(
        lambda s: g.vary(selection.images, selection.labels, sel_seeds, strength=s), strengths, features,
        reference.images, reference.labels, selection.images, selection.labels, selection.ids,
        adjacent_ssim=adjacent, seed=0)
    print(f"guidance {w}\n{table.to_string()}", flush=True)
if args.final:
    chosen = args.final_strength or chosen
    t = time.process_time()
    made = g.vary(subset.images, subset.labels, [variant_seed(0, i, 0) for i in subset.ids], strength=chosen)
    print(f"subset variations at {chosen}, guidance {g.config.guidance_scale}: {time.process_time() - t:.0f} CPU s",
          flush=True)
    print(fidelity.fidelity_report(features, reference.images, reference.labels, made, subset.labels, subset.ids,
                                   subset.images, subset.labels, subset.ids, seed=0).to_string(), flush=True)
