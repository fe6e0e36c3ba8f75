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


def test_outcome_against_fd_puts_each_source_at_its_medians_with_intervals():
    import pandas as pd

    sources = {"repeat": (0.5, 0.70), "diffusion latent-cpu-fast": (12.0, 0.75), "real (the other 70% of the pool)":
               (0.3, 0.20)}
    results, fidelity = [], []
    for split, metric in (("slice", "test_loss"), ("subject", "dementia_auc_person")):
        for source, (fd, outcome) in sources.items():
            for seed in range(5):
                key = f"{split}-{source}-{seed}"
                fidelity.append({"trial_key": key, "split": split, "source": source, "fd": fd + 0.1 * seed})
                results += [{"trial_key": key, "arch": "cnn", "metric": metric, "value": outcome + 0.01 * seed},
                            {"trial_key": key, "arch": "cnn", "metric": "accuracy", "value": 0.5}]
    fig = figures.outcome_against_fd(pd.DataFrame(results), pd.DataFrame(fidelity))
    slice_ax, subject_ax = fig.axes
    assert "cross-entropy" in slice_ax.get_ylabel() and "AUC" in subject_ax.get_ylabel()
    points = {line.get_label(): line for line in slice_ax.containers}
    repeat = next(c for c in slice_ax.containers if c.get_label().startswith("repeat"))
    x, y = repeat.lines[0].get_data()
    assert (float(x[0]), float(y[0])) == pytest.approx((0.7, 0.72))  # medians of 5 repeats
    assert len(points) == 3 and "(5 repeats)" in repeat.get_label()
    with pytest.raises(ValueError, match="by trial_key"):
        figures.outcome_against_fd(pd.DataFrame(results).assign(trial_key="other"), pd.DataFrame(fidelity))
    # the 30% real arm (nothing added, no FD) is the reference line, at its median, in each evaluation
    baseline = [{"trial_key": f"{split}-base-{seed}", "arch": "cnn", "split": split, "policy": "30% real",
                 "metric": metric, "value": 0.6 + 0.01 * seed}
                for split, metric in (("slice", "test_loss"), ("subject", "dementia_auc_person")) for seed in range(3)]
    fig = figures.outcome_against_fd(pd.DataFrame(results + baseline), pd.DataFrame(fidelity))
    for ax in fig.axes:
        line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("30% real, nothing added"))
        assert float(line.get_ydata()[0]) == pytest.approx(0.61) and "(3 repeats; no FD)" in line.get_label()
        assert len(ax.get_legend().get_texts()) == 4  # a legend per panel: the line and the three sources


def test_the_reference_line_takes_the_repeats_the_sources_were_measured_in():
    import pandas as pd

    fidelity = [{"trial_key": f"k{seed}", "split": "slice", "seed": seed, "source": "repeat", "fd": 0.5}
                for seed in range(2)]
    results = [{"trial_key": f"k{seed}", "arch": "cnn", "split": "slice", "seed": seed, "policy": "30% real + 70% "
                "repeat", "metric": "test_loss", "value": 0.6} for seed in range(2)]
    results += [{"trial_key": f"b{seed}", "arch": "cnn", "split": "slice", "seed": seed, "policy": "30% real",
                 "metric": "test_loss", "value": value} for seed, value in enumerate([0.5, 0.7, 2.0])]
    ax = figures.outcome_against_fd(pd.DataFrame(results), pd.DataFrame(fidelity)).axes[0]
    line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("30% real, nothing added"))
    assert float(line.get_ydata()[0]) == pytest.approx(0.6) and "(2 repeats" in line.get_label()  # seed 2 has no FD


def test_the_source_table_places_each_source_in_the_two_by_two_with_its_fidelity():
    import pandas as pd

    sources = {"repeat": ("no", "no"), "reconstruct_own latent-cpu-fast": ("yes", "no"),
               "reconstruct_other latent-cpu-fast": ("yes", "yes"), "real (the other 70% of the pool)": ("no", "yes"),
               "diffusion latent-cpu-fast": ("generated", "variations")}
    fidelity, results = [], []
    for i, source in enumerate(sources):
        for seed in range(3):
            key = f"{i}-{seed}"
            fidelity.append({"trial_key": key, "split": "subject", "seed": seed, "source": source,
                             "fd": 10.0 * i + seed, "label_fidelity": 0.8, "psnr": 26.0 + seed, "ssim": 0.9})
            results.append({"trial_key": key, "arch": "cnn", "metric": "dementia_auc_person",
                            "value": 0.7 + seed / 100})
    table = figures.source_table(pd.DataFrame(results), pd.DataFrame(fidelity))
    assert len(table) == 5 and set(table.index.get_level_values("evaluation")) == {"subject"}
    for i, (source, (blur, content)) in enumerate(sources.items()):
        row = table.loc[("subject", source)]
        assert (row.blur, row["new content"], row.FD, row["PSNR (dB)"]) == (blur, content, 10.0 * i + 1, 27.0)
        assert row["median [interval]"] == "0.710 [0.700, 0.720]" and "higher is better" in row.readout
