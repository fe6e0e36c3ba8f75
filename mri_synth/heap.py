"""Keep freed memory in the process heap, so that a CPU training step stops paying for fresh pages.

glibc's ``malloc`` serves every allocation above a threshold (128 KiB, raised dynamically up to 32 MiB) with its
own ``mmap`` and hands it back with ``munmap`` when freed; it also returns free memory at the top of the heap to
the system (``trim``). A CPU training step allocates and frees the same large activation tensors every step (the
basic CNN's first block alone is 64 x 16 x 128 x 128 values, 32 MiB in bf16), so every step the kernel maps them
again and zero-fills them page by page: about 12,000-17,000 page faults per CNN step on the 2-core CI machine,
measured with ``getrusage``. Raising glibc's mmap and trim thresholds (``mallopt``) keeps that memory in the heap
for reuse: 0-300 faults per step, and 10-20% more images per second (``benchmarks/train_throughput.py``,
"heap" lines). PyTorch's CUDA caching allocator does the same on the GPU; on the CPU PyTorch leaves it to ``malloc``, and its
performance tuning guide suggests preloading jemalloc or tcmalloc for this reason. ``mallopt`` needs no preload,
so a notebook kernel gets it too.

The cost: the process keeps up to ``limit_bytes`` of freed memory for reuse instead of returning it to the
system at once, and the heap takes a few steps to settle (a new tensor lands above the freed ones until freed
neighbours have merged into a block it fits; for a 64 MiB tensor, five rounds). The setting is process-wide. Only glibc has ``mallopt``; elsewhere (macOS, Windows, musl) this
is a no-op that says so by returning ``False``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # both thresholds' documented defaults
DEFAULT_LIMIT_BYTES = 1 << 30

_active = False


def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    function = getattr(libc, "mallopt", None)
    if function is not None:
        function.argtypes, function.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return function


def retain_freed_memory(enabled: bool = True, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> bool:
    """Keep (``enabled``) or stop keeping freed memory up to ``limit_bytes`` in this process's heap.

    Returns whether the setting is now in force: ``False`` where the C library has no ``mallopt``.
    ``enabled=False`` puts both thresholds back to glibc's 128 KiB defaults (without their dynamic adjustment).
    """
    global _active
    if not 0 < limit_bytes < 2**31:
        raise ValueError(f"limit_bytes must be between 1 and 2**31 - 1 (mallopt takes a C int), got {limit_bytes}")
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
