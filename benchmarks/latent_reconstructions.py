"""The latent cpu preset's autoencoder on held-out training slices: PSNR/SSIM against 4x average-pool + bilinear.

    MRI_SYNTH_DATA=<dataset folder> MRI_SYNTH_CACHE=/tmp/latent-cache OMP_NUM_THREADS=1 \
        .venv/bin/python benchmarks/latent_reconstructions.py

Loads the generator benchmarks/latent_fidelity.py trained (the only folder under <cache>/latent); 96 slices of the
70% of the training split it never saw. Recorded output: results/latent_reconstructions.txt and the panel
results/latent_cpu_reconstructions.png.
"""
import os
import sys
from pathlib import Path

DATA = os.environ.get("MRI_SYNTH_DATA")
if not DATA:
    sys.exit("set MRI_SYNTH_DATA to the dataset folder (the real Alzheimer MRI data in the hub's layout)")

import torch

torch.set_num_threads(1)
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio as psnr
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from mri_synth import paths
from mri_synth.analysis.plots import image_grid, save_figure
from mri_synth.data.cache import load_data
from mri_synth.data.sampling import stratified_sample
from mri_synth.synth.latent import LatentDiffusionGenerator

d = load_data(DATA)
idx = stratified_sample(d.train.labels, 0.3, 0)
held = torch.ones(len(d.train), dtype=torch.bool)
held[idx] = False
h = torch.nonzero(held).flatten()[::40][:96]
x = d.train.images[h]
g = LatentDiffusionGenerator.load(next(Path(paths.cache_dir() / "latent").iterdir()), device="cpu", cpu_threads=1)
r = g.reconstruct(x)
b = F.interpolate(F.avg_pool2d(x.float(), 4), size=128, mode="bilinear")
for name, y in (("autoencoder", r.float()), ("4x avg-pool + bilinear", b)):
    print(name, "PSNR", psnr(y, x.float(), data_range=255.0).item(),
          "SSIM", ssim(y, x.float(), data_range=255.0).item())
tiles = torch.stack([t for i in range(6) for t in (x[i], r[i])])
save_figure(image_grid(tiles, [s for i in range(6) for s in ("held-out real", "reconstruction")], ncols=4),
            "latent_cpu_reconstructions", Path(__file__).parent / "results")
