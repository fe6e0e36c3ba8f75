"""benchmarks/source_fidelity.py (Figure 7.3's x axis) end to end on the bundled sample: it rebuilds each trial's
added images from the cache, measures them against the validation set, and resumes."""

import benchmark_scripts  # tests/ is on sys.path (conftest.py)
import pandas as pd
import pytest

from mri_synth import cli


@pytest.fixture
def source_fidelity():
    return benchmark_scripts.load("source_fidelity")


def test_each_trials_added_images_are_measured_once(source_fidelity, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    assert cli.main(["study", "--data", "sample", "--fractions", "1.0", "0.3", "--arms", "none", "repeat",
                     "reconstruct_own", "autoaugment@0.3", "--seeds", "1", "--epochs", "1", "--batch-size", "32",
                     "--diffusion-preset", "latent-toy", "--results", str(results)]) == 0
    out = tmp_path / "fidelity.csv"
    args = ["--results", str(results / "cnn"), "--out", str(out), "--data", "sample", "--feature-epochs", "1",
            "--selection", "20"]
    table = source_fidelity.main(args)
    # 100% real, repeat and the reconstructions; 30% real adds nothing and AutoAugment adds no image
    assert sorted(table.source) == ["real (the other 70% of the pool)", "reconstruct_own latent-toy", "repeat"]
    row = table.set_index("source").loc["reconstruct_own latent-toy"]
    assert row.fd > 0 and 0 <= row.label_fidelity <= 1 and 0 < row.ssim < 1 and row.psnr > 5
    assert table.set_index("source").loc["repeat", ["psnr", "ssim"]].isna().all()  # a repeat is its source
    assert pd.read_csv(out).trial_key.tolist() == table.trial_key.tolist()
    capsys.readouterr()
    again = source_fidelity.main(args)  # everything measured: nothing is measured again
    assert again.trial_key.tolist() == table.trial_key.tolist() and "fd" not in capsys.readouterr().out
