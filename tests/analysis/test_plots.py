"""Tests of mri_synth.analysis.plots: figures drawn from constructed tables hold the expected panels and data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from mri_synth.analysis import plots

ARMS = [  # policy, real_fraction, synthetic, synthetic_fraction, augment
    ("100% real", 1.0, "none", 0.0, "none"),
    ("30% real", 0.3, "none", 0.0, "none"),
    ("30% real + 70% diffusion", 0.3, "diffusion", 0.7, "none"),
    ("30% real repeated", 0.3, "repeat", 0.7, "none"),
    ("30% real + AutoAugment", 0.3, "none", 0.0, "autoaugment"),
]
CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")


@pytest.fixture
def results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for arch in ("cnn", "vit"):
        for seed in range(3):
            for policy, real_fraction, synthetic, synthetic_fraction, augment in ARMS:
                spec = {"trial_key": f"{arch}/{policy}/{seed}", "arch": arch, "real_fraction": real_fraction,
                        "synthetic": synthetic, "synthetic_fraction": synthetic_fraction,
                        "synthetic_classes": "all", "augment": augment, "seed": seed, "policy": policy}
                rows.append({**spec, "metric": "test_loss", "value": 0.5 - 0.3 * real_fraction + 0.01 * seed})
                rows += [{**spec, "metric": f"recall_{name}", "value": rng.uniform(0.3, 1.0)} for name in CLASSES]
    return pd.DataFrame(rows)


@pytest.fixture
def history(results) -> pd.DataFrame:
    keys = results[results["metric"] == "test_loss"].drop(columns=["metric", "value"])
    frames = [keys.assign(epoch=epoch, step=10 * epoch, metric=metric, value=1.0 / epoch)
              for epoch in (1, 2, 3) for metric in ("train_loss", "test_loss")]
    return pd.concat(frames, ignore_index=True)


def _points(ax) -> np.ndarray:
    return np.concatenate([np.asarray(c.get_offsets()).reshape(-1, 2) for c in ax.collections])


def test_loss_distribution_shows_every_repeat_in_the_given_order(results):
    order = ["30% real", "30% real + 70% diffusion", "100% real"]
    reference = {"100% real": 0.1760, "30% real": 0.2199, "30% real + 70% diffusion": 0.1742}
    fig = plots.plot_loss_distribution(results, order, reference=reference)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["cnn", "vit"]
    for ax in fig.axes:
        # one row per arm, top to bottom in the given order (labels stay horizontal, however long)
        assert [t.get_text() for t in ax.get_yticklabels()] == order
        assert ax.get_xlabel() == "test_loss"
        points = _points(ax)
        # 3 policies x 3 repeats from the strip plot, then 3 reference markers at the thesis values.
        assert len(points) == 9 + 3
        np.testing.assert_allclose(sorted(points[-3:, 0]), sorted(reference.values()))
        expected = results[(results["metric"] == "test_loss") & results["policy"].isin(order)
                           & (results["arch"] == ax.get_title())]["value"]
        np.testing.assert_allclose(sorted(points[:9, 0]), sorted(expected))


def test_policies_at_fraction_shows_only_that_fraction_ordered_by_median(results):
    fig = plots.plot_policies_at_fraction(results, 0.3)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == sorted(p for p, fraction, *_ in ARMS if fraction == 0.3)
    assert "100% real" not in labels
    assert fig.get_suptitle() == "test_loss of every policy at 30% real"
    # a table of one evaluation says which in the title
    assert plots.plot_policies_at_fraction(results.assign(split="subject"), 0.3).get_suptitle() == (
        "subject split: test_loss of every policy at 30% real")
    with pytest.raises(ValueError, match="no trials at real_fraction=0.5"):
        plots.plot_policies_at_fraction(results, 0.5)


def test_metric_vs_real_fraction_draws_one_line_per_method_with_the_medians(results):
    fig = plots.plot_metric_vs_real_fraction(results)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    lines = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert set(lines) == {"real only", "+ diffusion", "+ repeat", "+ autoaugment"}
    x, y = lines["real only"].lines[0].get_data()
    # Medians over seeds 0..2 of 0.5 - 0.3 * fraction + 0.01 * seed, at fractions 0.3 and 1.0 (dodged a little).
    np.testing.assert_allclose(x, [0.3, 1.0], atol=0.02)
    np.testing.assert_allclose(y, [0.5 - 0.09 + 0.01, 0.5 - 0.3 + 0.01])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4  # one interval band per method


def test_per_class_recall_labels_classes_with_counts(results):
    fig = plots.plot_per_class_recall(results, ["30% real", "100% real"], class_counts={"Moderate_Demented": 49})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["Mild\nDemented", "Moderate\nDemented\n(n=49)", "Non\nDemented", "Very_Mild\nDemented"]
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["30% real", "100% real"]
    assert fig.axes[0].get_legend() is None
    fig.canvas.draw()  # the legend stands right of the last panel, where it covers no box (low recalls included)
    assert fig.axes[1].get_legend().get_window_extent().x0 >= fig.axes[1].get_window_extent().x1
    # three panels side by side (07's figure): no class name runs into its neighbour's
    three = pd.concat([results, results[results["arch"] == "vit"].assign(arch="vit_tiny")])
    fig = plots.plot_per_class_recall(three, class_counts={"Moderate_Demented": 49, "Very_Mild_Demented": 1781})
    fig.canvas.draw()
    for ax in fig.axes[:3]:
        boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
        assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:])), ax.get_title()
    # the runner also records each recall at the last step (recall_<class>_last): not a class of its own
    recall = results[results["metric"].str.startswith("recall_")]
    with_last = pd.concat([results, recall.assign(metric=recall["metric"] + "_last")])
    fig = plots.plot_per_class_recall(with_last, ["30% real", "100% real"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == labels[:1] + ["Moderate\nDemented"] + labels[2:]
    with pytest.raises(ValueError, match="no recall_<class> rows"):
        plots.plot_per_class_recall(results[results["metric"] == "test_loss"])


def test_learning_curves_have_a_panel_per_metric_and_architecture(history):
    fig = plots.plot_learning_curves(history)
    assert [ax.get_title() for ax in fig.axes] == ["cnn train_loss", "vit train_loss", "cnn test_loss",
                                                  "vit test_loss"]
    x, y = fig.axes[0].get_lines()[0].get_data()
    np.testing.assert_allclose(x, [1, 2, 3])
    np.testing.assert_allclose(y, [1.0, 0.5, 1 / 3])
    assert fig.axes[0].get_xlabel() == "epoch (passes over the arm's own training set)"
    assert fig.get_suptitle().startswith("learning curves")
    one_arch = plots.plot_learning_curves(history[history["arch"] == "cnn"].assign(split="slice"), ["test_loss"],
                                          x="step")
    assert len(one_arch.axes) == 1 and one_arch.axes[0].get_xlabel() == "step"
    assert one_arch.get_suptitle().startswith("slice split: learning curves")
    with pytest.raises(ValueError, match=r"history has no \['accuracy'\]"):
        plots.plot_learning_curves(history, ["accuracy"])


def test_learning_curves_show_the_validation_loss_where_the_test_set_was_predicted_at_two_steps_only(history):
    # held_out_curve=False: the test loss only at the chosen and last steps, so the default curve is validation's
    test = history[history["metric"] == "test_loss"]
    sparse = pd.concat([history[history["metric"] == "train_loss"], test.assign(metric="val_loss"),
                        test.assign(value=np.where(test["epoch"] == 2, np.nan, test["value"]))])
    fig = plots.plot_learning_curves(sparse)
    assert [ax.get_title() for ax in fig.axes][2:] == ["cnn val_loss", "vit val_loss"]
    assert [ax.get_title() for ax in plots.plot_learning_curves(
        pd.concat([history, test.assign(metric="val_loss")])).axes][2:] == ["cnn test_loss", "vit test_loss"]


def test_unknown_policy_and_missing_column_raise(results):
    with pytest.raises(ValueError, match="policies \\['50% real'\\] have no 'test_loss' rows"):
        plots.plot_loss_distribution(results, ["50% real"])
    with pytest.raises(ValueError, match="lacks column.*policy"):
        plots.plot_loss_distribution(results.drop(columns="policy"))


def test_image_grid_accepts_tensors_and_lays_out_rows():
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    fig = plots.image_grid(images, titles=[f"#{i}" for i in range(5)], ncols=3)
    assert len(fig.axes) == 6  # 2 rows x 3 columns, the last one empty
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and shown[4].get_title() == "#4"
    np.testing.assert_array_equal(shown[2].images[0].get_array(), images[2, 0].numpy())
    with pytest.raises(ValueError, match="2 titles for 5 images"):
        plots.image_grid(images, titles=["a", "b"])
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        plots.image_grid(np.zeros((16, 16), dtype=np.uint8))


def test_save_figure_writes_png_and_pdf(tmp_path, monkeypatch):
    fig = plots.image_grid(np.zeros((2, 1, 8, 8), dtype=np.uint8))
    written = plots.save_figure(fig, "grid", tmp_path / "new" / "figures")
    assert [p.name for p in written] == ["grid.png", "grid.pdf"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written[1].read_bytes()[:5] == b"%PDF-"
    monkeypatch.setenv("MRI_SYNTH_FIGURES", str(tmp_path / "default"))
    assert plots.save_figure(fig, "grid", "")[0] == tmp_path / "default" / "grid.png"
    with pytest.raises(ValueError, match="bare file name"):
        plots.save_figure(fig, "sub/grid.png", tmp_path)


def test_show_figure_saves_and_shows_the_figure_in_a_kernel_never_its_paths(tmp_path, monkeypatch):
    import IPython
    import IPython.display

    fig = plots.image_grid(np.zeros((2, 1, 8, 8), dtype=np.uint8))
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # a script: saved, nothing shown
    assert plots.show_figure(fig, "grid", tmp_path) is None
    assert (tmp_path / "grid.png").exists() and (tmp_path / "grid.pdf").exists() and shown == []

    class Kernel:  # what a Jupyter kernel's shell carries
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Kernel())
    (tmp_path / "grid.png").unlink()
    assert plots.show_figure(fig, "grid", tmp_path) is None  # a cell ending with it prints no paths
    assert shown == [fig] and (tmp_path / "grid.png").exists()


def test_figures_are_released_by_pyplot(results):
    from matplotlib import pyplot as plt

    before = len(plt.get_fignums())
    figures = [plots.plot_loss_distribution(results) for _ in range(3)]
    assert len(plt.get_fignums()) == before  # a notebook shows each once; loops do not pile figures up
    assert all(len(fig.axes) == 2 for fig in figures)


# ----------------------------------------------------------------------------------------------- leakage audit


def test_person_slices_shows_one_person_in_chain_order(sample_data):
    fig = plots.plot_person_slices(sample_data, 0)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 32 and "32 slices in chain order" in fig._suptitle.get_text()
    order = sample_data.subjects.positions[sample_data.subjects.groups == 0]
    first = np.flatnonzero(sample_data.subjects.groups == 0)[np.argmin(order)]
    images = torch.cat([sample_data.train.images, sample_data.test.images])
    assert np.array_equal(shown[0].images[0].get_array(), images[first, 0].numpy())
    assert {ax.get_title() for ax in shown} == {"train", "test"}


def test_nearest_train_similarity_draws_both_baselines():
    nearest = pd.DataFrame({"same_class": np.linspace(0.97, 0.99, 50), "other_class": np.linspace(0.88, 0.94, 50)})
    fig = plots.plot_nearest_train_similarity(nearest, bins=20)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and len(ax.lines) == 2  # two histograms, two median lines
    assert sorted(round(line.get_xdata()[0], 3) for line in ax.lines) == [0.91, 0.98]
    with pytest.raises(ValueError, match="columns same_class and other_class"):
        plots.plot_nearest_train_similarity(nearest.rename(columns={"other_class": "x"}))


def test_panels_say_how_each_architecture_was_trained(results, history):
    # issue 24: every figure that shows ResNet-18 or the ViT trained from random weights says so (not the thesis's
    # ImageNet-pretrained setting); a table without the column (or with mixed runs) keeps the bare name
    trained = {"cnn": "no", "vit": "yes"}
    fig = plots.plot_loss_distribution(results.assign(pretrained=results["arch"].map(trained)))
    assert [ax.get_title() for ax in fig.axes] == ["cnn (from scratch)", "vit (ImageNet-pretrained)"]
    fig = plots.plot_learning_curves(history.assign(pretrained="no"), ["train_loss"])
    assert [ax.get_title() for ax in fig.axes] == ["cnn (from scratch) train_loss", "vit (from scratch) train_loss"]
    mixed = results.assign(pretrained=np.where(results["seed"] == 0, "yes", "no"))
    assert [ax.get_title() for ax in plots.plot_per_class_recall(mixed).axes] == ["cnn", "vit"]
    fig = plots.plot_metric_vs_real_fraction(results.assign(pretrained="no"))
    assert [ax.get_title() for ax in fig.axes] == ["cnn (from scratch)", "vit (from scratch)"]
