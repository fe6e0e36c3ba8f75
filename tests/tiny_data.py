"""Tiny constructed inputs that test files share (imported as ``tiny_data``: conftest puts tests/ on the path)."""

import numpy as np


def people(counts=(3, 2, 12, 8), slices=4):
    """Person ids and labels: ``counts[c]`` people of class c, ``slices`` slices each."""
    labels, groups = [], []
    for c, n in enumerate(counts):
        for p in range(n):
            labels += [c] * slices
            groups += [f"c{c}p{p}"] * slices
    return np.array(labels), np.array(groups)
