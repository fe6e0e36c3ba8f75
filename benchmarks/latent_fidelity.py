"""Latent vs pixel diffusion on the real data: CPU time to train, time to vary, and fidelity beside its floor.

    MRI_SYNTH_CACHE=/tmp/latent-cache OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_fidelity.py \
        [--source ../shared/data/alzheimer_mri] [--out benchmarks/results/latent_fidelity]

Protocol (issue 12), one thread throughout:
- the generators train on a 30% stratified subset of the training split (1,536 slices), nothing else;
- the other 70% of the training split is held out from them and split, stratified, into
  a feature set (a basic CNN is trained on it: the feature space of FD/KID/precision/recall and the label-fidelity
  classifier; real slices only, no ImageNet weights), a selection set (the SDEdit strength of each generator is
  chosen on variations of these unseen slices by ``fidelity.STRENGTH_CRITERION``) and a reference set (what the
  final variations are measured against, halves of it give the real-vs-real floor);
- the final variations are one per subset slice, at the chosen strength; the test split is never read.

Writes ``<out>.md`` (the table and the run's notes), ``<out>_report.csv`` (every metric beside its floor),
``<out>_strengths.csv`` and ``<out>_pairs_<preset>.png``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

from mri_synth.analysis import fidelity, memorisation
from mri_synth.analysis.plots import save_figure
from mri_synth.analysis.synthetic_figures import real_synthetic_pairs
from mri_synth.data.cache import load_data
from mri_synth.data.sampling import stratified_sample
from mri_synth.synth.base import variant_seed
from mri_synth.synth.diffusion import DiffusionConfig, DiffusionGenerator
from mri_synth.synth.latent import LatentDiffusionConfig, LatentDiffusionGenerator
from mri_synth.training.fit import fit
from mri_synth.training.settings import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified indices of ``fraction`` of ``labels`` and of the rest."""
    first = stratified_sample(labels, fraction, seed)
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[first] = False
    return first, torch.nonzero(rest).flatten()


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which this project does not install)."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)])


def splits(source: str, seed: int, selection: int):
    """The generators' 30% subset, and the rest split into the feature, selection and reference sets."""
    train = load_data(source).train
    subset_idx, held_idx = split(train.labels, 0.3, seed)
    subset, held = train.subset(subset_idx), train.subset(held_idx)
    feat_idx, rest_idx = split(held.labels, 0.5, seed + 1)
    feature_set, rest = held.subset(feat_idx), held.subset(rest_idx)
    sel_idx, ref_idx = split(rest.labels, selection / len(rest), seed + 2)
    return subset, feature_set, rest.subset(sel_idx), rest.subset(ref_idx)


def feature_space(feature_set, selection, reference, epochs: int, seed: int, lr_schedule: str | None = "cosine",
                  augment: str = "none"):
    """The basic CNN trained on the feature set, its checkpoint chosen by the selection set's loss (the reference
    set's accuracy is only reported): the FD/KID feature space and the label-fidelity classifier."""
    result = fit("cnn", feature_set.images, feature_set.labels, reference.images, reference.labels,
                 TrainConfig(epochs=epochs, seed=seed, progress=False, lr_schedule=lr_schedule, augment=augment),
                 validation=(selection.images, selection.labels), selection="val_loss")
    return fidelity.PenultimateFeatures(result.model, result.spec), result


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "alzheimer_mri"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latent_fidelity"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selection", type=int, default=300, help="held-out slices the strength is chosen on")
    parser.add_argument("--latent-strengths", default="0.55,0.6,0.7")
    parser.add_argument("--pixel-strengths", default="0.3,0.45,0.6")
    parser.add_argument("--feature-epochs", type=int, default=30, help="epochs of the feature CNN (its checkpoint "
                        "is chosen on the selection set)")
    parser.add_argument("--tiny", action="store_true", help="the bundled sample and toy presets: an end-to-end check "
                        "in a minute (its numbers mean nothing)")
    args = parser.parse_args()
    if args.tiny:
        args.source, args.selection, args.latent_strengths, args.pixel_strengths = "sample", 20, "0.3,0.6", "0.5"
    torch.set_num_threads(1)
    notes = [f"load average at start: {os.getloadavg()[0]:.2f} (2 cores, shared); 1 torch thread throughout"]

    subset, feature_set, selection, reference = splits(args.source, args.seed, args.selection)
    notes.append(f"subset {len(subset)} {subset.class_counts()}; feature set {len(feature_set)}; selection "
                 f"{len(selection)}; reference {len(reference)} (halves for the floor)")
    epochs = 1 if args.tiny else args.feature_epochs
    (features, result), wall, cpu = timed(lambda: feature_space(feature_set, selection, reference, epochs, args.seed))
    chosen = result.history[result.history.step == result.best_step].iloc[0]
    notes.append(f"feature CNN (FD/KID space and label-fidelity classifier; real slices only, frozen before any "
                 f"generator setting was tuned): {epochs} epochs on the feature set, {cpu / 60:.1f} CPU min; "
                 f"checkpoint chosen by the lowest selection-set loss: epoch {result.best_epoch}, selection-set "
                 f"accuracy {chosen.val_accuracy:.3f}; accuracy on the reference set (reported only) "
                 f"{chosen.accuracy:.3f}")

    presets = {
        "pixel quick (32 px, upsampled)": (DiffusionGenerator,
                                           DiffusionConfig.toy() if args.tiny else DiffusionConfig.quick(),
                                           [float(s) for s in args.pixel_strengths.split(",")]),
        "latent cpu": (LatentDiffusionGenerator, LatentDiffusionConfig.preset("toy" if args.tiny else "cpu"),
                       [float(s) for s in args.latent_strengths.split(",")]),
    }
    adjacent = memorisation.median_adjacent_ssim(subset.images, subset.labels)
    notes.append(f"copy test of the strength selection: a variation's median SSIM to its source against the median "
                 f"adjacent-slice SSIM among the subset's {len(subset)} slices, {adjacent:.3f} (the final copy test's "
                 "floor; among the sparse selection slices a slice's nearest other slice is seldom its neighbour)")
    rows, reports, strength_tables = [], [], []
    for name, (cls, config, strengths) in presets.items():
        generator, wall, cpu = timed(lambda: cls.cached(config, subset.images, subset.labels, subset.ids,
                                                         seed=args.seed, device="cpu", cpu_threads=1,
                                                         progress=False))
        train_cpu = sum(v for k, v in getattr(generator, "seconds", {}).items() if k.endswith("_cpu")) or cpu
        train_wall = sum(v for k, v in getattr(generator, "seconds", {}).items() if not k.endswith("_cpu")) or wall
        sel_seeds = [variant_seed(args.seed, i, 0) for i in selection.ids]
        strength, table = fidelity.select_strength(
            lambda s: generator.vary(selection.images, selection.labels, sel_seeds, strength=s), strengths,
            features, reference.images, reference.labels, selection.images, selection.labels, selection.ids,
            adjacent_ssim=adjacent, seed=args.seed)
        strength_tables.append(table.assign(preset=name))
        print(f"{name}: strength {strength} chosen\n{table}", flush=True)
        seeds = [variant_seed(args.seed, i, 0) for i in subset.ids]
        made, vary_wall, vary_cpu = timed(lambda: generator.vary(subset.images, subset.labels, seeds,
                                                                 strength=strength))
        report = fidelity.fidelity_report(features, reference.images, reference.labels, made, subset.labels,
                                          subset.ids, subset.images, subset.labels, subset.ids, seed=args.seed)
        reports.append(report.assign(preset=name, strength=strength))
        r = report.set_index("metric")
        rows.append({"preset": name, "strength": strength, "CPU minutes to train": train_cpu / 60,
                     "wall minutes to train": train_wall / 60, "seconds per 100 variations": 100 * vary_cpu / len(made),
                     "FD": r.loc["FD", "value"], "FD / floor": r.loc["FD", "ratio"], "KID": r.loc["KID", "value"],
                     "precision": r.loc["precision", "value"], "recall": r.loc["recall", "value"],
                     "label fidelity": r.loc["label fidelity", "value"],
                     "nearest-real ratio": r.loc["median RMSE to nearest training slice (floor: held-out real)",
                                                 "ratio"],
                     "median SSIM to source": r.loc["median SSIM to source (floor: adjacent slice)", "value"],
                     "share of copies": r.loc["share of copies (closer to source than its adjacent slice)", "value"]})
        # the figure: two sources per class with two more variations each, beside the one variation of every source
        pick = torch.cat([torch.nonzero(subset.labels == c).flatten()[:2] for c in range(4)])
        extra = generator.vary(subset.images[pick].repeat_interleave(2, 0), subset.labels[pick].repeat_interleave(2),
                               [variant_seed(args.seed, subset.ids[i], v) for i in pick.tolist() for v in (1, 2)],
                               strength=strength)
        fig = real_synthetic_pairs(subset.images, subset.labels, subset.ids, torch.cat([made, extra]),
                                   list(subset.ids) + [subset.ids[i] for i in pick.tolist() for _ in (1, 2)],
                                   per_class=2, variants=3)
        save_figure(fig, f"{Path(args.out).name}_pairs_{name.split()[0]}", Path(args.out).parent)
        print(name, rows[-1], flush=True)
    floor = reports[-1].set_index("metric").floor
    rows.append({"preset": "real vs real (floor: two halves of the reference)", "FD": floor["FD"],
                 "FD / floor": 1.0, "KID": floor["KID"], "precision": floor["precision"], "recall": floor["recall"],
                 "label fidelity": floor["label fidelity"], "nearest-real ratio": 1.0,
                 "median SSIM to source": floor["median SSIM to source (floor: adjacent slice)"]})
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(reports).to_csv(f"{out}_report.csv", index=False)
    pd.concat(strength_tables).to_csv(f"{out}_strengths.csv", index=False)
    text = ["# Latent vs pixel diffusion: training cost and fidelity (issue 12)", "",
            markdown(table), "", "Strength selection (" +
            fidelity.STRENGTH_CRITERION + "):", "", markdown(pd.concat(strength_tables)),
            "", *[f"- {n}" for n in notes]]
    Path(f"{out}.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
