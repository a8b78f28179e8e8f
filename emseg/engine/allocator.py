"""Keep freed tensor memory in the process instead of handing it back to the kernel after every step.

On glibc, an allocation above the mmap threshold (128 KiB, rising to at most 32 MiB) gets fresh pages from the
kernel and returns them when freed, so every training step faults in its activations again, page by page. On
this project's 2-core VM that page-fault work was 45% of a U-Net training step (1.22 s against 0.69 s per step of
8 patches of 256x256 in bfloat16; ``scripts/benchmark.py`` shows the figures). PyTorch's CPU tuning guide makes the
same point with jemalloc or tcmalloc; raising glibc's thresholds with ``mallopt`` gets the same effect without a
preloaded library. The cost: the process keeps its peak memory until it ends.

Threads other than the main one allocate from their own arenas, whose heaps cannot hold blocks of tens of MiB:
those are mapped and unmapped at every call whatever the thresholds, so a network run in a Dask worker's thread
took 1.8-2x the time of the same run in a main thread (0.71 against 0.35 s for one 1216x1216 U-Net window). One
arena for the whole process serves them from the main heap too, but only when the process starts with it (by
the time emseg runs, torch's threads have made their arenas): processes that run emseg's work in threads (Dask
workers) are started with these settings as environment variables (:data:`ENVIRONMENT`).
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD, TRIM_THRESHOLD = 2**30, 2**31 - 1  # bytes; mallopt takes a C int
# the same settings as glibc reads them from the environment at a process's start
ENVIRONMENT = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
               "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
_state = {"done": None}


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Serve allocations below ``mmap_threshold`` bytes from the heap and keep up to ``trim_threshold`` bytes of
    freed heap, so tensors reuse pages already mapped (in the main thread; see the module docstring). Returns
    whether it took effect (glibc only; elsewhere a no-op). Calling it again does nothing more."""
    if _state["done"] is not None:
        return _state["done"]
    done = False
    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library the interpreter runs on
        done = bool(mallopt and mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except OSError:
        done = False
    _state["done"] = done
    logger.info("allocator: %s", "freed memory kept for reuse (glibc mallopt)" if done
                else "left as it is (no glibc mallopt here)")
    return done
