"""CPU time to train the pixel `quick` diffusion preset from scratch on the 1,536 slices of the 30% subset.

    MRI_SYNTH_DATA=<dataset folder> OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pixel_quick_train_time.py

latent_fidelity.py found this generator in its cache (trained by an earlier, killed run), so its table shows no
training time for it; this is that number. Recorded output: results/latent_fidelity.md (notes).
"""
import os
import sys
import time

DATA = os.environ.get("MRI_SYNTH_DATA")
if not DATA:
    sys.exit("set MRI_SYNTH_DATA to the dataset folder (the real Alzheimer MRI data in the hub's layout)")

import torch

torch.set_num_threads(1)
from mri_synth.data.cache import load_data
from mri_synth.data.sampling import stratified_sample
from mri_synth.synth.diffusion import DiffusionConfig, DiffusionGenerator

d = load_data(DATA)
s = d.train.subset(stratified_sample(d.train.labels, 0.3, 0))
w, c = time.perf_counter(), time.process_time()
DiffusionGenerator(DiffusionConfig.quick(), device="cpu", cpu_threads=1).train(
    s.images, s.labels, s.ids, seed=0, progress=False)
print(f"pixel quick: trained on {len(s)} slices in {(time.process_time() - c) / 60:.2f} CPU min "
      f"({(time.perf_counter() - w) / 60:.2f} wall min), 1 thread")
