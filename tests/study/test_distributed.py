"""The study on Ray: the same table as the sequential runner, resumes, and a failed task loses no finished trial.

One local Ray with 2 CPUs serves the module (starting it takes ~10 s); grids are tiny (the bundled sample, one
epoch of 32-px inputs, batch 32). Tasks run in other processes, so what a task does is observed through files.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mri_synth import cli
from mri_synth.study import distributed as D  # importable without ray: it imports ray when a study runs on it
from mri_synth.study import trial
from mri_synth.study import trials as S

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]' (CI installs it)")

ARGS = ["study", "--data", "sample", "--arch", "cnn", "--fractions", "1.0", "0.3", "--arms", "none", "repeat",
        "diffusion@0.3", "--seeds", "2", "--epochs", "1", "--equal-steps", "--batch-size", "32", "--input-size", "32",
        "--diffusion-preset", "toy", "--device", "cpu", "--cpu-threads", "1"]
TINY = dict(epochs=1, equal_steps=True, batch_size=32, input_size=32)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def context(sample_data, tmp_path_factory):
    return trial.StudyContext(data=sample_data, bank_root=tmp_path_factory.mktemp("bank"),
                          generator_root=tmp_path_factory.mktemp("generators"), device="cpu", cpu_threads=1)


def _stable(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table.metric.str.endswith("_time_s")].reset_index(drop=True)


def test_ray_table_equals_the_sequential_table(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache-sequential"))
    assert cli.main([*ARGS, "--results", str(tmp_path / "sequential")]) == 0
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache-ray"))  # the generators are trained afresh
    assert cli.main([*ARGS, "--results", str(tmp_path / "ray"), "--ray"]) == 0
    sequential = pd.read_parquet(tmp_path / "sequential" / "cnn" / "results.parquet")
    on_ray = pd.read_parquet(tmp_path / "ray" / "cnn" / "results.parquet")
    assert len(sequential) and set(on_ray.policy) == {"100% real", "30% real", "30% real + 70% repeat",
                                                      "30% real + 70% diffusion"}
    a, b = _stable(sequential), _stable(on_ray)
    pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
    np.testing.assert_allclose(b.value, a.value, rtol=1e-6, atol=1e-9, equal_nan=True)
    # one generator per (subset, preset): two seeds, two 30% subsets, each trained once by its own task
    assert len(list((tmp_path / "cache-ray" / "diffusion").glob("*/generator.json"))) == 2
    assert sorted(p.name for p in (tmp_path / "ray" / "cnn" / "trials").glob("*.npz")) == \
        sorted(p.name for p in (tmp_path / "sequential" / "cnn" / "trials").glob("*.npz"))


def _recording(marks: Path):
    """A task body that leaves a file per trial it trains, then trains as usual (pickled by value for Ray)."""
    def train(specs, context):
        for spec in specs:
            (marks / spec.key).touch()
        return D.train_group(specs, context)
    return train


def test_a_resumed_ray_run_skips_finished_trials(context, tmp_path):
    specs = S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat"], range(2), **TINY)
    marks = tmp_path / "marks"
    marks.mkdir()
    D.run_study_ray(specs[:2], context, tmp_path / "results", train=_recording(marks), progress=False)
    finished = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "trials").glob("*.json")}
    for mark in marks.iterdir():
        mark.unlink()
    results, _ = D.run_study_ray(specs, context, tmp_path / "results", train=_recording(marks), progress=False)
    assert sorted(p.name for p in marks.iterdir()) == sorted(s.key for s in specs[2:])  # only the pending ones ran
    assert {n: (tmp_path / "results" / "trials" / n).stat().st_mtime_ns for n in finished} == finished
    assert list(results.trial_key.unique()) == [s.key for s in specs]


@pytest.mark.parametrize("how", ["raises", "exits"])
def test_a_failed_task_loses_no_finished_trial(context, tmp_path, how):
    specs = S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat"], range(2), **TINY)
    doomed = specs[1].key

    def train(group, ctx):
        if any(spec.key == doomed for spec in group):
            if how == "exits":
                os._exit(3)  # the worker process dies mid-task, as a killed or crashed one does
            raise RuntimeError("this trial's task fails")
        return D.train_group(group, ctx)

    with pytest.raises(D.TrialsFailed, match=doomed) as failure:
        D.run_study_ray(specs, context, tmp_path, train=train, progress=False)
    assert [keys for keys, _ in failure.value.failed] == [[doomed]]
    written = sorted(p.stem for p in (tmp_path / "trials").glob("*.json"))
    assert written == sorted(s.key for s in specs if s.key != doomed)
    for key in written:  # complete files: predictions beside each
        assert json.loads((tmp_path / "trials" / f"{key}.json").read_text())["metrics"]["steps"] > 0
        assert (tmp_path / "trials" / f"{key}.npz").exists()
    results, _ = D.run_study_ray(specs, context, tmp_path, progress=False)  # a rerun finishes only the missing one
    assert list(results.trial_key.unique()) == [s.key for s in specs]


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[ray\]'"):
        D._require_ray()


def test_small_generators_share_a_gpu_and_real_size_ones_get_a_whole_one():
    from mri_synth.study.distributed import generator_gpus

    assert generator_gpus("latent-cpu") == generator_gpus("quick") == generator_gpus("latent-toy") == 0.125
    assert generator_gpus("latent-gpu") == generator_gpus("gpu") == generator_gpus("gpu:strength=0.6") == 1.0
    spec = S.TrialSpec(real_fraction=0.3, synthetic="diffusion", synthetic_fraction=0.7, generator="latent-cpu")
    assert generator_gpus(spec.generator) == 0.125  # what _dispatch passes: the trial's recorded label
