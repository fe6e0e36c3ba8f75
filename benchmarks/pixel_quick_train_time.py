"""CPU time to train the pixel `quick` diffusion preset from scratch on the 1,536 slices of the 30% subset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pixel_quick_train_time.py

latent_fidelity.py found this generator in its cache (trained by an earlier, killed run), so its table shows no
training time for it; this is that number. Recorded output: results/latent_fidelity.md (notes).
"""
import time

import torch

torch.set_num_threads(1)
from mri_synth.data.cache import load_data
from mri_synth.data.sampling import stratified_sample
from mri_synth.synth.diffusion import DiffusionConfig, DiffusionGenerator

d = load_data("/work/shared/data/alzheimer_mri"); s = d.train.subset(stratified_sample(d.train.labels, 0.3, 0))
w, c = time.perf_counter(), time.process_time()
DiffusionGenerator(DiffusionConfig.quick(), device="cpu", cpu_threads=1).train(s.images, s.labels, s.ids, seed=0, progress=False)
print(f"pixel quick: trained on {len(s)} slices in {(time.process_time() - c) / 60:.2f} CPU min ({(time.perf_counter() - w) / 60:.2f} wall min), 1 thread")
