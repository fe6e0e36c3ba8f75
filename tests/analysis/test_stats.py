"""Tests of mri_synth.analysis.stats on constructed results tables whose right answers are known.

Comparisons of arms are tests/analysis/test_contrasts.py's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mri_synth.analysis import stats


def _rows(arch: str, policy: str, seeds, values, metric: str = "test_loss", **spec) -> list[dict]:
    base = {"arch": arch, "policy": policy, "metric": metric, "real_fraction": 0.3, "synthetic": "none",
            "synthetic_fraction": 0.0, "synthetic_classes": "all", "augment": "none", "epochs": 3}
    return [{**base, **spec, "seed": int(s), "value": float(v), "trial_key": f"{arch}/{policy}/{s}"}
            for s, v in zip(seeds, values)]


def test_summarize_matches_numpy_and_is_reproducible():
    values = np.array([0.3, 0.1, 0.2, 0.5, 0.4, 0.25])
    table = pd.DataFrame(_rows("cnn", "A", range(6), values) + _rows("cnn", "B", range(6), values + 1)
                         + _rows("cnn", "A", range(6), values * 0, metric="accuracy"))
    summary = stats.summarize(table)
    assert list(summary["policy"]) == ["A", "B"]
    a = summary.iloc[0]
    assert a["n"] == 6 and a["metric"] == "test_loss"
    assert a["median"] == pytest.approx(np.median(values))
    assert a["mean"] == pytest.approx(values.mean())
    assert a["std"] == pytest.approx(values.std(ddof=1))
    assert a["median_lo"] <= a["median"] <= a["median_hi"]
    assert values.min() <= a["median_lo"] and a["median_hi"] <= values.max()
    assert summary.iloc[1]["median"] == pytest.approx(np.median(values) + 1)
    pd.testing.assert_frame_equal(summary, stats.summarize(table))


def test_summarize_rejects_thin_settings_unless_asked():
    table = pd.DataFrame(_rows("cnn", "A", [0], [0.3]) + _rows("cnn", "B", range(3), [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="fewer than 2 repeats.*min_repeats=1"):
        stats.summarize(table)
    summary = stats.summarize(table, min_repeats=1).set_index("policy")
    assert np.isnan(summary.loc["A", "median_lo"]) and summary.loc["A", "median"] == pytest.approx(0.3)


def test_missing_metric_is_named():
    table = pd.DataFrame(_rows("cnn", "A", range(3), [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="no rows with metric == 'auc'"):
        stats.summarize(table, "auc")
    with pytest.raises(ValueError, match="lacks column.*arch"):
        stats.summarize(table.drop(columns="arch"))


def test_direction_of_metrics():
    assert stats.is_lower_better("test_loss") and stats.is_lower_better("ece")
    assert not stats.is_lower_better("balanced_accuracy")
    assert not stats.is_lower_better("recall_Moderate_Demented")
    with pytest.raises(ValueError, match="add it to mri_synth.analysis.stats.LOWER_IS_BETTER"):
        stats.is_lower_better("auc")


def test_holm_adjustment_by_hand():
    # Sorted p 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04); NaN is left out of m.
    adjusted = stats.holm_adjust([0.01, 0.04, np.nan, 0.03])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])


def test_thesis_comparison_matches_generative_arm_not_the_repeat_control():
    seeds = range(3)
    rows = (_rows("cnn", "100% real", seeds, [0.17, 0.18, 0.19], real_fraction=1.0)
            + _rows("cnn", "30% real + 70% diffusion", seeds, [0.2, 0.21, 0.22], synthetic="diffusion",
                    synthetic_fraction=0.7)
            + _rows("cnn", "30% real repeated", seeds, [0.3, 0.3, 0.3], synthetic="repeat", synthetic_fraction=0.7)
            + _rows("cnn", "30% real + AutoAugment", seeds, [0.4, 0.4, 0.4], augment="autoaugment"))
    table = stats.thesis_comparison(pd.DataFrame(rows)).set_index("thesis_setting")
    assert len(table) == 3
    assert table.loc["100% real", "median"] == pytest.approx(0.18)
    assert table.loc["100% real", "thesis_median"] == pytest.approx(0.1760, abs=5e-5)
    synthetic = table.loc["30% real + 70% DALL-E 2 synthetic"]
    assert synthetic["policy"] == "30% real + 70% diffusion"
    assert synthetic["ratio"] == pytest.approx(0.21 / 0.174202)
    # No plain 30% arm was run (only AutoAugment, which the thesis row does not match): shown empty.
    assert table.loc["30% real", "n"] == 0 and np.isnan(table.loc["30% real", "median"])


def test_method_labels_drop_the_real_fraction():
    rows = (_rows("cnn", "30% real", [0], [0.1]) + _rows("cnn", "100% real", [0], [0.1], real_fraction=1.0)
            + _rows("cnn", "30% + diff", [0], [0.1], synthetic="diffusion", synthetic_fraction=0.7)
            + _rows("cnn", "30% + diff MM", [0], [0.1], synthetic="diffusion",
                    synthetic_classes="Mild_Demented+Moderate_Demented")
            + _rows("cnn", "30% + AA", [0], [0.1], augment="autoaugment"))
    labels = list(stats.with_method(pd.DataFrame(rows))["method"])
    assert labels == ["real only", "real only", "+ diffusion",
                      "+ diffusion (Mild_Demented+Moderate_Demented)", "+ autoaugment"]


def test_two_grids_in_one_table_are_summarised_apart():
    # the same arms run twice, at 3 and at 10 epochs, into one results folder: never one pooled median
    rows = (_rows("cnn", "B", range(4), [1.0, 1.1, 1.2, 1.3]) + _rows("cnn", "A", range(4), [0.9, 1.0, 1.1, 1.2])
            + _rows("cnn", "B", range(4), [0.5, 0.6, 0.7, 0.8], epochs=10)
            + _rows("cnn", "A", range(4), [0.3, 0.4, 0.5, 0.6], epochs=10))
    table = pd.DataFrame(rows)
    summary = stats.summarize(table, "test_loss", by=["policy"])
    got = sorted(zip(summary.policy, summary.epochs, summary["median"].round(6)))
    assert got == [("A", 3, 1.05), ("A", 10, 0.45), ("B", 3, 1.15), ("B", 10, 0.65)]
    # a single grid gets no extra column
    assert "epochs" not in stats.summarize(table[table.epochs == 3], "test_loss", by=["policy"]).columns
