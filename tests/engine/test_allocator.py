"""The allocator setting keeps freed tensor memory mapped, so a step's activations do not fault in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emseg.engine.allocator import keep_freed_memory

SCRIPT = """
import resource, sys, torch
from emseg.engine.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# a 64 MiB tensor, freed and made again, as each training step does with its activations; the heap settles after
# two (measured: the first two fault every page in whatever the setting, the third now and then), so the sixth counts
for _ in range(6):
    before = faults()
    tensor = torch.ones(2**24)
    del tensor
print(faults() - before)
"""
PAGES = 2**26 // 4096


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or not keep_freed_memory(), reason="glibc's mallopt only")
def test_freed_memory_is_reused_without_page_faults():
    def faults(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                                  check=True).stdout)

    assert faults("default") > PAGES // 2  # glibc maps and unmaps an allocation this large every time
    assert faults("keep") < PAGES // 100
