"""FD of the latent cpu preset's plain reconstructions (encode + decode, no diffusion): the autoencoder's ceiling;
then, with --strengths, variations at strengths below the selection grid's.

    MRI_SYNTH_CACHE=/tmp/latent-cache OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_ceiling.py

Same splits, feature CNN and reference as benchmarks/latent_fidelity.py (seed 0). If reconstructions already sit
far from the floor, the autoencoder limits fidelity; if they sit near it, the latent UNet does.
"""
import latent_fidelity as lf
import torch

from mri_synth import paths
from mri_synth.analysis import fidelity
from mri_synth.data.cache import load_data
from mri_synth.synth.latent import LatentDiffusionGenerator
from mri_synth.training.fit import fit
from mri_synth.training.settings import TrainConfig

torch.set_num_threads(1)
data = load_data(str(lf.ROOT.parent / "shared" / "data" / "alzheimer_mri"))
subset_idx, held_idx = lf.split(data.train.labels, 0.3, 0)
subset, held = data.train.subset(subset_idx), data.train.subset(held_idx)
feat_idx, rest_idx = lf.split(held.labels, 0.5, 1)
feature_set, rest = held.subset(feat_idx), held.subset(rest_idx)
sel_idx, ref_idx = lf.split(rest.labels, 300 / len(rest), 2)
selection, reference = rest.subset(sel_idx), rest.subset(ref_idx)
result = fit("cnn", feature_set.images, feature_set.labels, selection.images, selection.labels,
             TrainConfig(epochs=8, seed=0, progress=False))
features = fidelity.PenultimateFeatures(result.model, result.spec)
g = LatentDiffusionGenerator.load(next((paths.cache_dir() / "latent").iterdir()), device="cpu", cpu_threads=1)
recon = g.reconstruct(subset.images)
import sys

from mri_synth.synth.base import variant_seed

print(fidelity.fidelity_report(features, reference.images, reference.labels, recon, subset.labels, subset.ids,
                               subset.images, subset.labels, subset.ids, seed=0).to_string(), flush=True)
for s in [float(v) for v in sys.argv[1:]]:
    made = g.vary(subset.images, subset.labels, [variant_seed(0, i, 0) for i in subset.ids], strength=s)
    print(f"strength {s}", fidelity.fidelity_report(features, reference.images, reference.labels, made, subset.labels,
          subset.ids, subset.images, subset.labels, subset.ids, seed=0).to_string(), sep="\n", flush=True)
