"""benchmarks/record_real_notebooks.py: a training notebook is recorded only when its whole grid is recorded, so
recording reads trials and never trains the rest."""

import json

import benchmark_scripts  # tests/ is on sys.path (conftest.py)
import pytest

from mri_synth.notebooks import profile_study


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    record_real_notebooks = benchmark_scripts.load("record_real_notebooks")
    monkeypatch.setitem(record_real_notebooks.PROFILES, "rerun",
                        (tmp_path, record_real_notebooks.PROFILES["rerun"][1]))
    return record_real_notebooks


def test_a_training_notebook_waits_for_every_trial_of_its_grid(recorder, tmp_path, monkeypatch, capsys):
    specs = profile_study("rerun", "cnn").specs
    assert recorder.missing_trials("rerun", "04") == (len(specs), len(specs))
    assert "04" not in recorder.available("rerun")
    trials = tmp_path / "results" / "cnn" / "trials"
    trials.mkdir(parents=True)
    for spec in specs[:-1]:
        (trials / f"{spec.key}.json").write_text(json.dumps({"spec": {}}))
    assert recorder.missing_trials("rerun", "04") == (1, len(specs))  # the one left would be trained: not yet
    monkeypatch.setenv("MRI_SYNTH_DATA", str(tmp_path))
    with pytest.raises(SystemExit):
        recorder.main(["--profile", "rerun", "--only", "04"])
    err = capsys.readouterr().err
    assert f"1 of the {len(specs)} trials" in err and "recording would train them" in err
    (trials / f"{specs[-1].key}.json").write_text("{}")
    assert "04" in recorder.available("rerun") and "01" not in recorder.available("rerun")  # 01-03: the real profile's
    with pytest.raises(SystemExit):
        recorder.main(["--profile", "rerun", "--only", "01"])
