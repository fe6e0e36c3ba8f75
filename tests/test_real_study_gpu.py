"""benchmarks/real_study_gpu.sh (the real study's generator arms on a GPU machine), its CPU dry run, and the
``precision`` setting it trains with."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from mri_synth.study.trials import TrialSpec

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_trains_the_generator_arms_and_thesis_budget_rows(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "REAL_STUDY_WORK": str(tmp_path / "work")}
    env.pop("MRI_SYNTH_CACHE", None)
    out = tmp_path / "out"
    done = subprocess.run(["bash", "benchmarks/real_study_gpu.sh", "--dry-run", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "slice 0 exit 0" in (out / "summary.txt").read_text()
    with tarfile.open(out / "results.tar") as tar:
        names = tar.getnames()
    specs = [TrialSpec.from_dict(json.loads((Path("/") / n).read_text())["spec"]) for n in names
             if "/trials/" in n and n.endswith(".json")]
    assert all((Path("/") / n.replace(".json", ".npz")).is_file() for n in names
               if n.endswith(".json") and "/trials/" in n)
    generator_arms = {(s.synthetic, s.synthetic_classes) for s in specs if s.equal_steps}
    assert generator_arms == {("diffusion", ()), ("diffusion", ("Mild_Demented", "Moderate_Demented"))}
    thesis = sorted((s.real_fraction, s.synthetic) for s in specs if not s.equal_steps)
    assert thesis == [(0.3, "diffusion"), (0.3, "none"), (0.3, "repeat"), (1.0, "none")]
    assert all(s.generator == "latent-toy" for s in specs if s.synthetic == "diffusion")
    with tarfile.open(out / "logs.tar") as tar:  # the one generator, trained once and shared by both budgets
        assert len([n for n in tar.getnames() if "/generator_latent-" in n]) == 1
