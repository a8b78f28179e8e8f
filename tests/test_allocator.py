"""The allocator setting keeps freed tensor memory mapped, so a step's activations do not fault in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from emseg.engine.allocator import ENVIRONMENT, keep_freed_memory

SCRIPT = """
import resource, sys, threading, torch
from emseg.engine.allocator import ENVIRONMENT, keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def steps(result):
    for _ in range(3):  # a 64 MiB tensor, freed and made again, as each training step does with its activations
        before = faults()
        tensor = torch.ones(2**24)
        del tensor
    result.append(faults() - before)
result = []
if sys.argv[2] == "thread":  # as a Dask worker runs a task
    worker = threading.Thread(target=steps, args=(result,))
    worker.start()
    worker.join()
else:
    steps(result)
print(result[0])
"""
PAGES = 2**26 // 4096


@pytest.mark.skipif(not sys.platform.startswith("linux") or not keep_freed_memory(), reason="glibc's mallopt only")
def test_freed_memory_is_reused_without_page_faults():
    def faults(mode: str, where: str = "main", environment: dict | None = None) -> int:
        return int(subprocess.run([sys.executable, "-c", SCRIPT, mode, where], capture_output=True, text=True,
                                  check=True, env={**os.environ, **(environment or {})}).stdout)

    assert faults("default") > PAGES // 2  # glibc maps and unmaps an allocation this large every time
    assert faults("keep") < PAGES // 100
    # another thread allocates from its own arena, where mallopt after the start does not help (measured: every
    # page faults again); the settings as environment variables at the process's start do (emseg.blockwise's workers)
    assert faults("default", "thread", ENVIRONMENT) < PAGES // 100
