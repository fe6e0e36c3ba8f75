"""Keeping freed memory in the heap: page faults stop, in this process and in child processes; only entry points
(the CLI here, the notebook batch in test_notebooks.py) switch it on, never fit(); bad limits are refused."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from mri_synth import cli
from mri_synth.training import heap
from mri_synth.training.fit import fit
from mri_synth.training.models import tiny_model
from mri_synth.training.settings import TrainConfig

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocates, fills and frees a 64 MiB tensor ten times, with the heap setting given, and prints the minor page
# faults of the median round after twelve warm-up rounds (kept, the heap takes a few rounds to settle: each new
# tensor lands above the freed ones until freed neighbours have merged into a block it fits). Its own process: the
# setting is process-wide.
_FAULTS_SCRIPT = """
import json, resource, statistics, sys, torch
from mri_synth.training import heap
state = heap.retain_freed_memory(sys.argv[1] == "keep") if sys.argv[1] != "inherited" else None
faults = []
for _ in range(19):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"state": state, "faults": statistics.median(faults[12:])}))
"""


def _faults_per_round(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], check=True, capture_output=True,
                          text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere retain_freed_memory is a no-op (tested below)")
def test_kept_heap_reuses_memory_instead_of_faulting_in_fresh_pages():
    returned, kept = _faults_per_round("return"), _faults_per_round("keep")
    assert returned["state"] is False and kept["state"] is True
    # Returned to the system, every 64 MiB tensor is mapped afresh: 16,384 faults of 4 KiB pages (or 32 with
    # 2 MiB transparent huge pages); kept, once the heap has settled, the same memory is reused.
    assert returned["faults"] >= 16
    assert kept["faults"] == 0


def test_without_mallopt_it_is_a_no_op_that_says_so(monkeypatch):
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert heap.retain_freed_memory() is False
    assert heap.retaining() is False


@pytest.mark.parametrize("limit", [0, -5, 2**31])
def test_a_limit_mallopt_cannot_take_is_refused(limit):
    with pytest.raises(ValueError, match="limit_bytes must be between 1 and 2\\*\\*31 - 1"):
        heap.retain_freed_memory(limit_bytes=limit)


@pytest.mark.skipif(not GLIBC, reason="GLIBC_TUNABLES is glibc's; other C libraries ignore it")
def test_processes_started_inside_the_block_keep_freed_memory(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    with heap.retained_in_subprocesses() as value:
        assert os.environ["GLIBC_TUNABLES"] == value
        inherited = _faults_per_round("inherited")  # the child itself never calls mallopt
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"  # put back as it was
    assert value.startswith("glibc.malloc.arena_max=2:") and "glibc.malloc.mmap_threshold=1073741824" in value
    assert inherited["faults"] == 0
    assert _faults_per_round("inherited")["faults"] >= 16  # started after the block: the default allocator again


def test_tunables_keep_the_callers_entries_and_thresholds():
    assert heap.tunables(4096) == "glibc.malloc.mmap_threshold=4096:glibc.malloc.trim_threshold=4096"
    mine = "glibc.malloc.trim_threshold=99:glibc.malloc.tcache_count=0"
    assert heap.tunables(4096, mine) == mine + ":glibc.malloc.mmap_threshold=4096"
    with pytest.raises(ValueError, match="limit_bytes"):
        heap.tunables(2**31)


def test_fit_leaves_the_process_allocator_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "retain_freed_memory", lambda *args, **kwargs: calls.append(args) or True)
    monkeypatch.setattr(heap, "_mallopt", lambda: calls.append("mallopt"))
    images = torch.randint(0, 256, (8, 1, 64, 64), dtype=torch.uint8)
    labels = torch.arange(8) % 4
    model, spec = tiny_model("cnn")
    fit(model, images, labels, images, labels, TrainConfig(max_steps=1, batch_size=4, progress=False, device="cpu"),
        spec=spec)
    assert calls == []


def test_the_cli_keeps_freed_memory_for_its_process(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(heap, "retain_freed_memory", lambda *args, **kwargs: calls.append(args) or True)
    assert cli.main(["notebooks", "--profile", "no_such_profile"]) == 2  # fails fast, after the entry point's setup
    assert calls == [()]
