"""Decoded-split cache: the first load of the real dataset (datasets + JPEG decoding) against a cached second load.

    .venv/bin/python benchmarks/data_cache.py [SOURCE]     # default: $MRI_SYNTH_DATA or ../shared/data/alzheimer_mri

Target (issue 2): the second load at least 10x faster than the first. Each run uses fresh, empty caches (ours and
the Hugging Face `datasets` arrow cache) in a temporary folder, so "first" really is first.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import time, sys
from mri_synth.data.cache import load_data  # torch's import is not part of a load
t = time.perf_counter()
d = load_data(sys.argv[1])
print(f"{time.perf_counter() - t:.3f} {len(d.train)} {len(d.test)}")
"""


def timed_load(source: str, cache: str) -> tuple[float, int, int]:
    # a fresh interpreter each time: nothing survives in memory between the loads, only what is on disk
    env = {**os.environ, "MRI_SYNTH_CACHE": cache, "HF_HOME": f"{cache}/hf-home"}
    out = subprocess.run([sys.executable, "-c", CHILD, source], env=env, capture_output=True, text=True, check=True)
    seconds, n_train, n_test = out.stdout.split()
    return float(seconds), int(n_train), int(n_test)


if __name__ == "__main__":
    source = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "MRI_SYNTH_DATA", str(ROOT.parent / "shared" / "data" / "alzheimer_mri"))
    print(f"source: {source}; load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    for repeat in range(3):
        with tempfile.TemporaryDirectory() as cache:
            first, n_train, n_test = timed_load(source, cache)
            second, *_ = timed_load(source, cache)
        rows.append((first, second))
        print(f"repeat {repeat}: first load {first:.2f} s, cached load {second:.3f} s "
              f"({n_train} train + {n_test} test images), {first / second:.0f}x")
    firsts, seconds = sorted(r[0] for r in rows), sorted(r[1] for r in rows)
    print(f"median: first {firsts[1]:.2f} s, cached {seconds[1]:.3f} s, speed-up {firsts[1] / seconds[1]:.0f}x "
          f"(target >= 10x); load average after: {os.getloadavg()[0]:.2f}")
