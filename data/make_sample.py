"""Rebuild the bundled sample (data/sample) from the full dataset: a few whole people, every slice of each.

    python data/make_sample.py /path/to/alzheimer_mri      # the hub-layout folder, or any source load_data reads

People are recovered from the pixels (``mri_synth.data.subjects``: the full dataset is 200 people x 32 slices) and drawn
with a fixed seed, a fixed number per class; each slice keeps the train/test split the source gave it, so the sample
is as leaky as the source's split and person splits can be cut from it. Images are written losslessly as PNG, named
by their split and row in the source, and ``people.csv`` records each file's person (the full dataset's group id)
and its place along that person's chain of slices.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mri_synth.data.cache import load_data
from mri_synth.data.sources import export_image_folder
from mri_synth.data.types import CLASS_NAMES

PEOPLE = (2, 2, 3, 2)  # people per class: Mild, Moderate (both of the dataset's two), Non, Very mild
SEED = 2024

if __name__ == "__main__":
    data = load_data(sys.argv[1] if len(sys.argv) > 1 else None)
    subjects = data.subjects
    if not subjects.clean:
        sys.exit(f"the source's people are not clean ({subjects.summary()}): the sample needs whole people")
    rng = np.random.default_rng(SEED)
    people = [int(p) for c, k in enumerate(PEOPLE)
              for p in sorted(rng.choice(np.flatnonzero(subjects.group_labels == c), size=k, replace=False))]
    out = Path(__file__).resolve().parent / "sample"
    rows = []
    for split_name, offset in (("train", 0), ("test", subjects.n_train)):
        split = getattr(data, split_name)
        picked = np.flatnonzero(np.isin(split.groups.numpy(), people))
        shutil.rmtree(out / split_name, ignore_errors=True)
        files = export_image_folder(split.subset(torch.from_numpy(picked)), out / split_name)
        rows += [{"id": f.relative_to(out).as_posix(), "person": int(subjects.groups[offset + i]),
                  "slice": int(subjects.positions[offset + i])} for f, i in zip(files, picked)]
        print(split_name, dict(zip(CLASS_NAMES, split.subset(torch.from_numpy(picked)).class_counts())))
    table = pd.DataFrame(rows).sort_values(["person", "slice"])
    table.to_csv(out / "people.csv", index=False)
    print(f"{len(people)} people ({', '.join(f'{CLASS_NAMES[c]} {k}' for c, k in enumerate(PEOPLE))}): {people}")
