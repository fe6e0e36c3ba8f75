"""The GPU check script runs its CPU parts end to end (so it cannot rot before a GPU machine runs it), and the
package's core works without the modules the GPU machines lack (datasets, diffusers, openai, papermill, ray)."""

import os
import subprocess
import sys

import benchmark_scripts  # tests/ is on sys.path (conftest.py)

from mri_synth.paths import PROJECT_ROOT


def test_core_works_without_the_optional_modules(tmp_path):
    gpu_check = benchmark_scripts.load("gpu_check")
    lines = gpu_check.imports(None)
    assert "loaded optional modules: none" in lines
    assert any("a trial without them: test_loss" in line for line in lines)
    # the blocker itself works: a module it blocks cannot be imported under it
    for blocked in ("papermill", "openai"):
        done = subprocess.run([sys.executable, "-c", gpu_check.BLOCKER + f"import {blocked}"], capture_output=True,
                              text=True)
        assert done.returncode != 0 and "blocked by the GPU check" in done.stderr


def test_gpu_check_cpu_parts_write_a_report(tmp_path):
    report = tmp_path / "report"
    env = {**os.environ, "PYTHON": sys.executable, "MRI_SYNTH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-only", str(report)],
                          capture_output=True, text=True, env=env, timeout=600)
    summary = (report / "summary.txt").read_text()
    assert done.returncode == 0, summary + done.stdout[-2000:] + "".join(
        p.read_text()[-1500:] for p in report.glob("*.log"))
    for part in ("env", "imports", "throughput", "stacked", "concurrent", "grid"):
        assert f"{part}: ok" in summary
        assert (report / f"{part}.txt").read_text().strip()
    throughput = (report / "throughput.txt").read_text()
    assert "cnn 64px" in throughput and "latent generator (toy preset" in throughput and "SKIPPED" not in throughput
    concurrent = (report / "concurrent.txt").read_text()
    assert "P=  1:" in concurrent and "P=  2:" in concurrent
    assert "K=2:" in (report / "stacked.txt").read_text()
    assert "8 cnn trials" in (report / "grid.txt").read_text() and (report / "grid" / "results.parquet").exists()


def test_stacked_profile_runs_every_variant_on_the_cpu(tmp_path):
    # benchmarks/stacked_profile.py is the prepared GPU diagnosis of the stacked step (issue 13's K = 32 target);
    # its quick mode runs the same code on the CPU at tiny sizes, so it cannot rot before a GPU machine runs it.
    out = tmp_path / "stacked_profile.txt"
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "stacked_profile.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    profile = out.read_text()
    for variant in ("one model (fit's step)", "as fit_stacked", "cudnn.benchmark", "fp32 (TF32 allowed)",
                    "vmap chunks of", "loop, one backward"):
        assert variant in profile
    # each variant's parts and its ratio to one at a time, then the profiler's table of the stacked step
    assert profile.count("x one at a time") == 5 and "forward+backward" in profile and "Self CPU" in profile
