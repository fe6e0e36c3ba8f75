"""How far each trial's added images are from real ones (issue 23, Figure 7.3's x axis), from the recorded trials.

    MRI_SYNTH_DATA=... OMP_NUM_THREADS=1 .venv/bin/python benchmarks/source_fidelity.py \
        [--results benchmarks/results/rerun/results/cnn ...] [--out benchmarks/results/rerun/source_fidelity.csv]

For every finished trial at 30% real whose arm adds images (repeat, diffusion, the reconstruction arms, ...) and for
the 100% real arm (its "added" images are the 70% of the pool outside the repeat's 30% subset: new content, no
generator), the images are rebuilt exactly as the trial drew them (``trial.training_set``: the cached generator and
bank, nothing is trained or generated again) and measured against the trial's evaluation's validation set, which no
trial trains on and no generator sees:

- ``fd``: the Frechet distance in the feature space of ``benchmarks/results/latent_fidelity.md`` (the basic CNN
  trained there on real training slices only, same seed and sets; its weights are cached under the cache folder);
- ``label_fidelity``: that CNN's accuracy on the added images under the labels they were added with;
- ``psnr`` and ``ssim`` of each added image to its own source (medians; NaN where the image is its source).

Writes one row per trial (``trial_key``, ``split``, ``seed``, ``policy``, ``source``, the four numbers, ``images``).
A row already in the output is not measured again, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from latent_fidelity import feature_space, splits  # noqa: E402

from mri_synth import paths  # noqa: E402
from mri_synth.analysis import fidelity, memorisation  # noqa: E402
from mri_synth.data.cache import load_data  # noqa: E402
from mri_synth.study.trial import StudyContext, rest_of_pool, training_set  # noqa: E402
from mri_synth.study.trials import TrialSpec  # noqa: E402
from mri_synth.training.models import create_model, get_spec  # noqa: E402

COLUMNS = ["trial_key", "split", "seed", "policy", "source", "fd", "label_fidelity", "psnr", "ssim", "images"]


def features(source: str, seed: int = 0, selection: int = 300, epochs: int = 30) -> fidelity.PenultimateFeatures:
    """latent_fidelity.md's feature CNN (trained once on its feature set, then read from the cache)."""
    path = paths.cache_dir() / "fidelity" / f"feature_cnn_seed{seed}_sel{selection}_ep{epochs}.pt"
    spec = get_spec("cnn")
    if path.exists():
        model = create_model("cnn", pretrained=False, spec=spec)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return fidelity.PenultimateFeatures(model, spec)
    _, feature_set, chosen, reference = splits(source, seed, selection)
    extractor, _ = feature_space(feature_set, chosen, reference, epochs, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(extractor.model.state_dict(), path)
    return extractor


def added_images(spec: TrialSpec, context: StudyContext) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], str]:
    """The images the trial added (100% real: the pool outside the repeat's 30% subset), their labels and source
    ids, and what they are."""
    if spec.synthetic == "none":  # 100% real: the content 30% real lacks, without a generator
        ev = context.evaluation(spec)
        rest = rest_of_pool(ev.pool, ev.real_subset(0.3, spec.seed))
        return rest.images, rest.labels, rest.ids, "real (the other 70% of the pool)"
    made = training_set(spec, context)
    n_real = len(made.real_ids)
    source = spec.synthetic if spec.synthetic == "repeat" else f"{spec.synthetic} {spec.generator}"
    return made.images[n_real:], made.labels[n_real:], made.synthetic_sources, source


def measure(spec: TrialSpec, context: StudyContext, extractor: fidelity.PenultimateFeatures) -> dict:
    images, labels, sources, name = added_images(spec, context)
    ev = context.evaluation(spec)
    reference = extractor(ev.validation.images)
    feats = extractor(images)
    label_fidelity = float((extractor.last_proba.argmax(1) == labels).float().mean())
    pool = {image_id: i for i, image_id in enumerate(ev.pool.ids)}
    psnr = ssim = float("nan")
    if spec.synthetic not in ("none", "repeat") and all(s in pool for s in sources):
        originals = ev.pool.images[torch.tensor([pool[s] for s in sources])]
        ssim = float(np.median(memorisation.similarity(images, originals).numpy()))
        psnr = float(torch.median(peak_signal_noise_ratio(images.float(), originals.float(), data_range=255.0,
                                                          reduction="none", dim=(1, 2, 3))))
    return {"trial_key": spec.key, "split": spec.split, "seed": spec.seed, "policy": spec.policy, "source": name,
            "fd": fidelity.frechet_distance(reference, feats), "label_fidelity": label_fidelity, "psnr": psnr,
            "ssim": ssim, "images": len(images)}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", nargs="+", default=[str(ROOT / "benchmarks/results/rerun/results/cnn")])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/rerun/source_fidelity.csv"))
    parser.add_argument("--data", default="", help="data source (default: MRI_SYNTH_DATA)")
    parser.add_argument("--feature-epochs", type=int, default=30, help="latent_fidelity.md's feature CNN: 30 epochs")
    parser.add_argument("--selection", type=int, default=300, help="... and its selection set (300 slices)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_data(args.data or None)
    context = StudyContext(data=data, cpu_threads=1)
    out = Path(args.out)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=COLUMNS)
    extractor = features(args.data or paths.default_source(), selection=args.selection, epochs=args.feature_epochs)
    specs = [TrialSpec.from_dict(json.loads(f.read_text())["spec"])
             for folder in args.results for f in sorted(Path(folder, "trials").glob("*.json"))]
    rows = [r for r in done.to_dict("records")]
    for spec in specs:
        wanted = (spec.real_fraction == 0.3 and spec.synthetic != "none") or spec.real_fraction == 1.0
        if not wanted or spec.augment != "none" or spec.key in set(done.trial_key):
            continue
        rows.append(measure(spec, context, extractor))
        print(f"{spec.split} repeat {spec.seed} {spec.policy}: fd {rows[-1]['fd']:.2f}, label fidelity "
              f"{rows[-1]['label_fidelity']:.3f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=COLUMNS).to_csv(out, index=False)  # after each trial: a kill loses one
    return pd.DataFrame(rows, columns=COLUMNS)


if __name__ == "__main__":
    main()
