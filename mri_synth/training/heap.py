"""Keep freed memory in the process heap, so that a CPU training step stops paying for fresh pages.

glibc's ``malloc`` serves every allocation above a threshold (128 KiB, raised dynamically up to 32 MiB) with its
own ``mmap`` and hands it back with ``munmap`` when freed; it also returns free memory at the top of the heap to
the system (``trim``). A CPU training step allocates and frees the same large activation tensors every step (the
basic CNN's first block alone is 64 x 16 x 128 x 128 values, 32 MiB in bf16), so every step the kernel maps them
again and zero-fills them page by page: thousands of page faults per CNN step (``getrusage`` counts them).
Raising glibc's mmap and trim thresholds keeps that memory in the heap for reuse (the fault counts and what that
gains, measured and dated: ``benchmarks/README.md``, "heap"). PyTorch's CUDA caching allocator does the
same on the GPU; on the CPU PyTorch leaves it to ``malloc``, and its performance tuning guide suggests preloading
jemalloc or tcmalloc for this reason. This needs no preload:

- :func:`retain_freed_memory` sets the thresholds in this process (``mallopt``);
- :func:`retained_in_subprocesses` makes processes started inside a ``with`` block (papermill's notebook kernels)
  start with them, through the ``GLIBC_TUNABLES`` variable glibc reads at start-up.

The cost: the process keeps up to ``limit_bytes`` of freed memory for reuse instead of returning it to the
system at once, and the heap takes a few steps to settle (a new tensor lands above the freed ones until freed
neighbours have merged into a block it fits; for a 64 MiB tensor, five rounds). The setting is process-wide, so
only entry points (the CLI, the notebook batch, a benchmark) choose it; library code such as ``train.fit`` never
does. Only glibc has ``mallopt`` and these tunables; elsewhere (macOS, Windows, musl) :func:`retain_freed_memory`
is a no-op that says so by returning ``False``, and other C libraries ignore the variable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # both thresholds' documented defaults
DEFAULT_LIMIT_BYTES = 1 << 30
TUNABLE_NAMES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")
"""The ``GLIBC_TUNABLES`` names of the two thresholds (glibc >= 2.26)."""

_active = False


def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    function = getattr(libc, "mallopt", None)
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return function


def _check_limit(limit_bytes: int) -> None:
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or not 0 < limit_bytes < 2**31:
        raise ValueError(f"limit_bytes must be between 1 and 2**31 - 1 (mallopt takes a C int), got {limit_bytes}")


def retain_freed_memory(enabled: bool = True, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> bool:
    """Keep (``enabled``) or stop keeping freed memory up to ``limit_bytes`` in this process's heap.

    Returns whether the setting is now in force: ``False`` where the C library has no ``mallopt``.
    ``enabled=False`` puts both thresholds back to glibc's 128 KiB defaults (without their dynamic adjustment).
    """
    global _active
    _check_limit(limit_bytes)
    mallopt = _mallopt()
    if mallopt is None:
        _active = False
        return False
    value = limit_bytes if enabled else GLIBC_DEFAULT_THRESHOLD
    # mallopt returns 1 on success; both must take effect (the mmap threshold alone still trims the heap, and the
    # trim threshold alone still maps every large tensor: neither helps on its own).
    ok = bool(mallopt(M_MMAP_THRESHOLD, value)) and bool(mallopt(M_TRIM_THRESHOLD, value))
    _active = enabled and ok
    return _active


def retaining() -> bool:
    """Whether ``retain_freed_memory`` is in force in this process."""
    return _active


def tunables(limit_bytes: int = DEFAULT_LIMIT_BYTES, existing: str = "") -> str:
    """A ``GLIBC_TUNABLES`` value that keeps up to ``limit_bytes`` of freed memory in a new process's heap.

    Entries of ``existing`` (another ``GLIBC_TUNABLES`` value) are kept, and a threshold it already sets wins.
    """
    _check_limit(limit_bytes)
    entries = [entry for entry in existing.split(":") if entry]
    named = {entry.split("=", 1)[0] for entry in entries}
    return ":".join(entries + [f"{name}={limit_bytes}" for name in TUNABLE_NAMES if name not in named])


@contextmanager
def retained_in_subprocesses(limit_bytes: int = DEFAULT_LIMIT_BYTES) -> Iterator[str]:
    """Processes started inside the block keep freed memory in their heaps, as :func:`retain_freed_memory` does.

    ``mallopt`` in this process does not reach a child (papermill runs each notebook in its own kernel process),
    but the environment does: ``GLIBC_TUNABLES`` is set for the block and put back as it was afterwards. Yields
    the value set.
    """
    before = os.environ.get("GLIBC_TUNABLES")
    os.environ["GLIBC_TUNABLES"] = value = tunables(limit_bytes, before or "")
    try:
        yield value
    finally:
        if before is None:
            os.environ.pop("GLIBC_TUNABLES", None)
        else:
            os.environ["GLIBC_TUNABLES"] = before
