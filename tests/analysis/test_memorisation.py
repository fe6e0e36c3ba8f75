"""The memorisation checks: nearest real images, SSIM to the source and to the adjacent slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_data import real_set

from mri_synth.analysis import memorisation


def test_nearest_real_finds_a_copy_and_keeps_the_real_baseline_honest():
    images, _, ids = real_set()
    copy = images[[2]]
    noisy = (images[[5]].int() + 3).clamp(0, 255).to(torch.uint8)
    table = memorisation.nearest_real(torch.cat([copy, noisy]), [ids[2], ids[1]], images, ids)
    syn = table[table.kind == "synthetic"].reset_index()
    assert syn.loc[0, "distance"] == pytest.approx(0, abs=1e-3) and syn.loc[0, "nearest_is_source"]
    assert syn.loc[1, "nearest_id"] == ids[5] and not syn.loc[1, "nearest_is_source"]
    assert syn.loc[1, "distance_to_source"] > 50  # random images are far apart
    real = table[table.kind == "real"]
    assert len(real) == 8 and (real.distance > 50).all()  # an image is never its own nearest neighbour


C1 = (0.01 * 255) ** 2  # SSIM's luminance constant at data range 255

SSIM_TOL = 5e-4  # SSIM runs in float32: E[x^2] - E[x]^2 of a constant image is not exactly 0


def constant(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 32, 32).contiguous()


def ssim_of_constants(a: float, b: float) -> float:
    return (2 * a * b + C1) / (a * a + b * b + C1)  # no variance: SSIM is its luminance term


def test_similarity_is_ssim_and_copy_check_compares_with_the_adjacent_slice():
    assert memorisation.similarity(constant(100), constant(50)).item() == pytest.approx(ssim_of_constants(100, 50),
                                                                                        abs=SSIM_TOL)
    sources, labels = constant(100, 110, 200, 50, 55), torch.tensor([0, 0, 0, 1, 1])
    ids = ["a", "b", "c", "d", "e"]
    assert memorisation.adjacent_index(sources, labels).tolist() == [1, 0, 1, 4, 3]  # nearest of its own class
    table = memorisation.copy_check(constant(100, 160, 52), ["a", "a", "d"], sources, labels, ids)
    assert table.to_source.tolist() == pytest.approx([1.0, ssim_of_constants(160, 100), ssim_of_constants(52, 50)],
                                                     abs=SSIM_TOL)
    assert table.adjacent.tolist() == pytest.approx([ssim_of_constants(100, 110)] * 2 + [ssim_of_constants(50, 55)],
                                                    abs=SSIM_TOL)
    assert table["copy"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="sources not among source_ids"):
        memorisation.copy_check(constant(1), ["z"], sources, labels, ids)


def test_median_adjacent_ssim_is_the_copy_checks_floor():
    sources, labels = constant(100, 110, 200, 50, 55), torch.tensor([0, 0, 0, 1, 1])
    pairs = [ssim_of_constants(100, 110), ssim_of_constants(110, 100), ssim_of_constants(200, 110),
             ssim_of_constants(50, 55), ssim_of_constants(55, 50)]  # adjacent index [1, 0, 1, 4, 3]
    assert memorisation.median_adjacent_ssim(sources, labels) == pytest.approx(float(np.median(pairs)), abs=SSIM_TOL)
