"""Rebuild the bundled sample (data/sample) from the full dataset: a small stratified subset of the real images.

    python data/make_sample.py /path/to/alzheimer_mri      # the hub-layout folder, or any source load_data reads

Fixed per-class counts (Moderate is kept above its proportional share so every class is present in both splits
and a few-epoch quick run sees it); images are written losslessly as PNG, named by their split and row in the
source, so each sample image can be traced back to the full dataset.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from mri_synth.data import CLASS_NAMES, export_image_folder, load_data

COUNTS = {  # images per class: Mild, Moderate, Non, Very mild
    "train": (30, 12, 100, 70),
    "test": (12, 6, 40, 28),
}
SEED = 2024

if __name__ == "__main__":
    data = load_data(sys.argv[1] if len(sys.argv) > 1 else None)
    out = Path(__file__).resolve().parent / "sample"
    for split_name, counts in COUNTS.items():
        split = getattr(data, split_name)
        rng = np.random.default_rng(SEED)
        picked = []
        for c, k in enumerate(counts):
            members = np.flatnonzero(split.labels.numpy() == c)
            picked += sorted(rng.choice(members, size=k, replace=False).tolist())
        shutil.rmtree(out / split_name, ignore_errors=True)
        export_image_folder(split.subset(torch.tensor(picked)), out / split_name)
        print(split_name, dict(zip(CLASS_NAMES, counts)))
