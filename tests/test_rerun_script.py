"""``benchmarks/rerun.sh``: a repeat at a time, downwards when FIRST > LAST, and a repeat the main checkout already
holds is read, not trained again (two runs from either end of a grid meet without training a repeat twice).

Run with a stand-in ``mri-synth`` (the script's ``MRI``) that writes one trial file per repeat it is asked for, unless
the file is there, and logs what it did."""

import os
import shutil
import subprocess

import pytest

from mri_synth.paths import PROJECT_ROOT

OUT = "benchmarks/results/rerun/results/cnn"
FAKE_MRI = """#!/usr/bin/env bash
set -eu
case $1 in
  study) seed=$(echo "$@" | sed 's/.*--first-seed \\([0-9]*\\).*/\\1/'); mkdir -p "$OUT/trials"
         if [[ -e $OUT/trials/r$seed.json ]]; then echo "read $seed" >> "$LOG"
         else echo "trained $seed" > "$OUT/trials/r$seed.json"; echo "trained $seed" >> "$LOG"; fi ;;
  tables|findings) ;;
  *) exit 2 ;;
esac
"""


def git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkouts(tmp_path):
    """A main checkout (a git repository holding repeat 2's trial) and a worktree with the script and the stand-in."""
    main, work = tmp_path / "main", tmp_path / "work"
    (main / OUT / "trials").mkdir(parents=True)
    (main / OUT / "trials" / "r2.json").write_text("trained 2 elsewhere\n")
    for readme in ("README.md", "benchmarks/results/rerun/README.md"):
        (main / readme).write_text("# readme\n")
    git(main, "init", "-q")
    git(main, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(main, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    (work / "benchmarks").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "benchmarks" / "rerun.sh", work / "benchmarks" / "rerun.sh")
    fake = tmp_path / "mri-synth"
    fake.write_text(FAKE_MRI)
    fake.chmod(0o755)
    return main, work, fake, tmp_path / "log"


def run(work, main, fake, log, *args):
    env = {**os.environ, "MAIN": str(main), "MRI": str(fake), "OUT": OUT, "LOG": str(log),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["bash", "benchmarks/rerun.sh", "cnn", "slice", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)


def test_downwards_and_a_repeat_main_holds_is_read_not_trained(checkouts):
    main, work, fake, log = checkouts
    done = run(work, main, fake, log, "3", "1")
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == ["trained 3", "read 2", "trained 1"]
    assert (main / OUT / "trials" / "r2.json").read_text() == "trained 2 elsewhere\n"  # not overwritten
    subjects = git(main, "log", "--format=%s").splitlines()
    assert subjects == ["rerun (cnn, slice): repeat 1, trials and findings blocks",
                        "rerun (cnn, slice): repeat 3, trials and findings blocks", "start"]
    assert sorted(p.name for p in (main / OUT / "trials").iterdir()) == ["r1.json", "r2.json", "r3.json"]


def test_upwards_when_first_is_not_above_last(checkouts):
    main, work, fake, log = checkouts
    assert run(work, main, fake, log, "1", "2").returncode == 0
    assert log.read_text().splitlines() == ["trained 1", "read 2"]
