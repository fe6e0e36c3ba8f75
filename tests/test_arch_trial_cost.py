"""benchmarks/arch_trial_cost.py (issue 24's trial prices): the pricing of a trial with and without the held-out
curve, and a quick run end to end on the bundled sample."""

import math

import benchmark_scripts  # tests/ is on sys.path (conftest.py)
import pytest


@pytest.fixture
def arch_trial_cost():
    return benchmark_scripts.load("arch_trial_cost")


def test_a_trial_is_priced_from_its_steps_and_the_images_it_evaluates(arch_trial_cost):
    # 1 s a step, 1 ms an image, 10 epochs: 680 steps; full-size arms evaluate 10 times, the 30% arms 33 times
    full = 680 + 10 * (768 + 1280) / 1000
    subset = 680 + math.ceil(680 / 21) * (768 + 1280) / 1000
    assert arch_trial_cost.trial_seconds(10, 1.0, 1e-3) == pytest.approx((full + subset) / 2)
    # without the curve the test slices are predicted twice a trial, validation still at every evaluation
    full, subset = 680 + (10 * 768 + 2560) / 1000, 680 + (33 * 768 + 2560) / 1000
    assert arch_trial_cost.trial_seconds(10, 1.0, 1e-3, curve=False) == pytest.approx((full + subset) / 2)
    assert arch_trial_cost.trial_seconds(5, 0.5, 0.0) == 170.0  # the old 5-epoch budget: 340 steps


def test_quick_mode_runs_and_writes_both_prices(arch_trial_cost, tmp_path, capsys):
    out = tmp_path / "cost.txt"
    arch_trial_cost.main(["--quick", "--variants", "bf16 channels-last", "--epochs", "10", "--out", str(out)])
    text = out.read_text()
    assert "priced at 10 epochs" in text and text.count("min, no curve") == 2  # resnet18 and vit_tiny at 32 px
    assert "## summary: cheapest variant per candidate at 10 epochs, no curve" in text
