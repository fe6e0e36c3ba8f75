"""Tiny constructed inputs that test files share (imported as ``tiny_data``: conftest puts tests/ on the path)."""

import numpy as np
import torch


def people(counts=(3, 2, 12, 8), slices=4):
    """Person ids and labels: ``counts[c]`` people of class c, ``slices`` slices each."""
    labels, groups = [], []
    for c, n in enumerate(counts):
        for p in range(n):
            labels += [c] * slices
            groups += [f"c{c}p{p}"] * slices
    return np.array(labels), np.array(groups)


def real_set(n: int = 8):
    """``n`` seeded random uint8 slices with labels cycling through the four classes and train ids."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 128, 128), generator=gen, dtype=torch.uint8)
    return images, torch.arange(n) % 4, [f"train/{i:05d}" for i in range(n)]
