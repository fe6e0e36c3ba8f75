"""The figures of synthetic images: real-synthetic pairs, classifier labels."""

from __future__ import annotations

import pytest
from tiny_data import real_set

from mri_synth.analysis import synthetic_figures as figures


def test_pairs_figure_has_a_row_per_source_and_names_a_mismatch():
    images, labels, ids = real_set()
    synthetic = images.repeat_interleave(2, 0)
    sources = [s for s in ids for _ in range(2)]
    fig = figures.real_synthetic_pairs(images, labels, ids, synthetic, sources, per_class=1, variants=2)
    assert len(fig.axes) == 4 * 3  # one row per class: the real slice and two variations
    with pytest.raises(ValueError, match="ids must match their source ids"):
        figures.real_synthetic_pairs(images, labels, ids, synthetic, ["test/1"] * len(synthetic))
