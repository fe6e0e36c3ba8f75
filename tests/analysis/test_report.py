"""The study's answer as notebook 07 shows it: both evaluations, each arm's median with its interval, the thesis's
medians beside the slice rows, and the figure of the two evaluations."""

import numpy as np
import pandas as pd
import pytest

from mri_synth.analysis import report
from mri_synth.analysis.stats import THESIS_CNN_MEDIANS

ARMS = {  # policy: real_fraction, synthetic, synthetic_fraction, augment
    "100% real": (1.0, "none", 0.0, "none"),
    "30% real": (0.3, "none", 0.0, "none"),
    "30% real + 70% diffusion": (0.3, "diffusion", 0.7, "none"),
    "30% real + 70% repeat": (0.3, "repeat", 0.7, "none"),
    "30% real + autoaugment": (0.3, "none", 0.0, "autoaugment"),
}
SLICE = {"100% real": 0.17, "30% real": 0.22, "30% real + 70% diffusion": 0.2, "30% real + 70% repeat": 0.21,
         "30% real + autoaugment": 0.19}
SUBJECT = {"100% real": 0.8, "30% real": 0.7, "30% real + 70% diffusion": 0.72, "30% real + 70% repeat": 0.69,
           "30% real + autoaugment": 0.71}
OFFSETS = [-0.02, -0.01, 0.0, 0.01, 0.03]  # the median of base + offsets is the base; min and max are known


def results_table(arch: str = "cnn", epochs: int = 10) -> pd.DataFrame:
    rows = []
    for split, metric, centres in [("subject", "dementia_auc_person", SUBJECT), ("slice", "test_loss", SLICE)]:
        for policy, (real, synthetic, synthetic_fraction, augment) in ARMS.items():
            for seed, offset in enumerate(OFFSETS):
                common = dict(arch=arch, policy=policy, real_fraction=real, synthetic=synthetic,
                              synthetic_fraction=synthetic_fraction, augment=augment, synthetic_classes="all",
                              split=split, seed=seed, epochs=epochs, generator="")
                rows += [{**common, "metric": metric, "value": centres[policy] + offset},
                         {**common, "metric": "accuracy", "value": 0.5}]
    return pd.DataFrame(rows)


def test_by_evaluation_puts_slice_first_and_reads_older_tables_as_slice():
    table = results_table()
    parts = report.by_evaluation(table)
    assert list(parts) == ["slice", "subject"]  # though the subject rows come first in the table
    assert set(parts["slice"].split) == {"slice"} and len(parts["subject"]) == len(table) / 2
    assert list(report.by_evaluation(table[table.split == "subject"])) == ["subject"]
    older = table[table.split == "slice"].drop(columns="split")
    assert list(report.by_evaluation(older)) == ["slice"] and report.by_evaluation(older)["slice"] is older


def test_summary_gives_each_arms_median_interval_and_the_thesis_median():
    summary = report.evaluation_summary(results_table())
    assert len(summary) == 2 * len(ARMS) and list(summary.split.unique()) == ["slice", "subject"]
    assert {"split", "arch", "policy", "real_fraction", "metric", "n", "median", "median_lo", "median_hi", "coverage",
            "thesis_median"} <= set(summary.columns)
    rows = summary.set_index(["split", "policy"])
    for (split, policy), row in rows.iterrows():
        centre = (SLICE if split == "slice" else SUBJECT)[policy]
        assert row.metric == ("test_loss" if split == "slice" else "dementia_auc_person")
        assert row.n == 5 and row["median"] == pytest.approx(centre)
        assert (row.median_lo, row.median_hi) == pytest.approx((centre - 0.02, centre + 0.03))  # 5 values: min, max
        assert row.coverage == pytest.approx(1 - 2 / 2**5)
    thesis = dict(zip(THESIS_CNN_MEDIANS.thesis_setting, THESIS_CNN_MEDIANS.thesis_median))
    slice_rows = rows.loc["slice"].thesis_median
    assert slice_rows["100% real"] == thesis["100% real"] and slice_rows["30% real"] == thesis["30% real"]
    assert slice_rows["30% real + 70% diffusion"] == thesis["30% real + 70% DALL-E 2 synthetic"]  # any generator
    assert np.isnan(slice_rows["30% real + 70% repeat"]) and np.isnan(slice_rows["30% real + autoaugment"])
    assert rows.loc["subject"].thesis_median.isna().all()  # the thesis had no subject split
    assert report.evaluation_summary(results_table(arch="vit")).thesis_median.isna().all()  # nor these models


def test_summary_at_one_fraction_and_grids_kept_apart():
    at = report.evaluation_summary(results_table(), real_fraction=0.3)
    assert set(at.real_fraction) == {0.3} and len(at) == 2 * 4
    two_grids = report.evaluation_summary(pd.concat([results_table(epochs=10), results_table(epochs=3)]))
    assert len(two_grids) == 2 * 2 * len(ARMS) and set(two_grids.epochs) == {3, 10}
    assert (two_grids.n == 5).all()  # never pooled into medians of 10


def test_the_figure_of_the_two_evaluations():
    fig = report.plot_two_evaluations(results_table(), real_fraction=0.3)
    slice_ax, subject_ax = fig.axes
    assert slice_ax.get_title() == report.LABELS["slice"] and subject_ax.get_title() == report.LABELS["subject"]
    assert slice_ax.get_xlabel() == report.READOUT_LABELS["test_loss"]
    assert subject_ax.get_xlabel() == report.READOUT_LABELS["dementia_auc_person"]
    assert [t.get_text() for t in slice_ax.get_yticklabels()] == [
        "100% real", "30% real", "30% real + 70% diffusion", "30% real + 70% repeat", "30% real + autoaugment"]
    assert [t.get_text() for t in slice_ax.get_legend().get_texts()] == ["thesis median (100 runs)"]
    assert [t.get_text() for t in subject_ax.get_legend().get_texts()] == ["chance"]
    assert subject_ax.lines[-1].get_xdata()[0] == 0.5
    without_full = results_table()[lambda t: t.real_fraction < 1]
    with pytest.raises(ValueError, match="no cnn trials at 50% or 100% real to plot: run notebooks 04-06 first"):
        report.plot_two_evaluations(without_full, real_fraction=0.5)


def test_the_figure_says_how_the_architecture_was_trained():
    scratch = results_table("resnet18").assign(pretrained="no")
    fig = report.plot_two_evaluations(scratch, real_fraction=0.3, arch="resnet18")
    assert fig._suptitle.get_text().startswith("resnet18 (from scratch): ")
    assert report.plot_two_evaluations(results_table(), 0.3)._suptitle.get_text().startswith("cnn: ")  # no column


def test_one_evaluation_gives_one_panel():
    table = results_table()
    fig = report.plot_two_evaluations(table[table.split == "slice"], real_fraction=0.3)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == report.LABELS["slice"]


def test_architecture_table_puts_every_arch_and_arm_side_by_side_with_intervals():
    both = pd.concat([results_table("cnn"), results_table("resnet18")], ignore_index=True)
    both = both[~((both.arch == "resnet18") & (both.policy == "30% real + 70% repeat"))]  # an arm not run there
    table = report.architecture_table(both)
    assert list(table.columns) == ["cnn", "resnet18"] and table.index[0] == "100% real"  # no pretrained column
    labelled = report.architecture_table(both.assign(pretrained=np.where(both.arch == "cnn", "no", "yes")))
    assert list(labelled.columns) == ["cnn (from scratch)", "resnet18 (ImageNet-pretrained)"]
    assert table.loc["30% real", "cnn"] == "0.700 [0.680, 0.730]"  # median and [min, max] of 5 repeats
    assert table.loc["30% real + 70% repeat", "resnet18"] == ""
    nan_fold = both.copy()  # a fold without both kinds of people has no AUC: left out, not an interval of NaN
    nan_fold.loc[(nan_fold.metric == "dementia_auc_person") & (nan_fold.seed == 4), "value"] = np.nan
    # the four defined repeats
    assert report.architecture_table(nan_fold).loc["30% real", "cnn"] == "0.695 [0.680, 0.710]"
    assert report.architecture_table(both, "slice").loc["100% real", "cnn"] == "0.170 [0.150, 0.200]"
    with pytest.raises(ValueError, match="no subject trials"):
        report.architecture_table(both[both.split == "slice"])


def test_a_diagnostic_arm_has_no_thesis_median():
    table = results_table()
    diagnostic = table[table.policy == "30% real + 70% diffusion"].assign(
        policy="30% real + 70% reconstruct_own", synthetic="reconstruct_own",
        generator_kind="diagnostic: the subset's autoencoder")
    summary = report.evaluation_summary(pd.concat([table.assign(generator_kind=""), diagnostic], ignore_index=True))
    medians = summary[summary.split == "slice"].set_index("policy").thesis_median
    assert np.isnan(medians["30% real + 70% reconstruct_own"]) and medians["30% real + 70% diffusion"] == 0.174202
