"""Exploration tables on the real data reproduce the thesis's Table 2.1 and the imbalance it lived with."""

from matplotlib import pyplot as plt

from mri_synth.chapters import exploration as E


def test_class_count_table_is_table_2_1(real_data):
    table = E.class_count_table(real_data)
    assert table.loc[list(E.CLASS_NAMES), "train"].tolist() == E.THESIS_TABLE_2_1["train"]
    assert table.loc[list(E.CLASS_NAMES), "test"].tolist() == E.THESIS_TABLE_2_1["test"]
    assert table.loc["all", "total"] == 6400


def test_imbalance_names_the_49_moderate_images(real_data):
    summary = E.imbalance_summary(real_data.train)
    assert summary["rarest_class"] == "Moderate_Demented" and summary["rarest_count"] == 49
    assert summary["largest_to_rarest"] == round(2566 / 49, 1)


def test_intensity_stats_per_class(real_data):
    stats = E.intensity_stats(real_data.train)
    assert stats["images"].tolist() == E.THESIS_TABLE_2_1["train"]
    assert ((stats["background_%"] > 20) & (stats["background_%"] < 80)).all()
    assert (stats["brain_mean"] > stats["mean"]).all()  # excluding the black surround raises the mean


def test_figures_have_a_panel_per_example(sample_data):
    fig = E.example_slices(sample_data.train, per_class=3)
    assert len(fig.axes) == 12 and sum(len(ax.images) for ax in fig.axes) == 12
    open_before = plt.get_fignums()
    hist = E.intensity_histograms(sample_data.train)
    assert len(hist.axes[0].patches) == 4  # one step histogram per class
    # neither figure is left open in pyplot: a notebook would show it a second time at the cell's end
    assert plt.get_fignums() == open_before
