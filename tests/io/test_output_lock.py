"""One job at a time writes an output (emseg.io.safety.OutputLock): a lock left by a killed job is taken over, a
held one refuses the second job, and a user's file that happens to bear the lock's name is never touched."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from emseg.io import stack_writer
from emseg.io.safety import OutputError, OutputLock


def write_one(path):
    with stack_writer("tiff", path, "uint8", (4, 4), 1) as writer:
        writer.write(np.ones((4, 4), np.uint8))


def test_a_lock_left_by_a_killed_job_is_taken_over_and_removed(tmp_path):
    out = tmp_path / "cells.tif"
    (tmp_path / "cells.tif.lock").write_text("job 12345 on elsewhere (since 2026-12-01 10:00:00)")  # no one holds it
    write_one(out)
    assert out.is_file() and not (tmp_path / "cells.tif.lock").exists()


def test_a_held_lock_refuses_a_second_job_naming_the_first(tmp_path):
    out = tmp_path / "cells.tif"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from emseg.io.safety import OutputLock
with OutputLock({str(out)!r}):
    print("held", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"cells.tif: job {holder.pid} on .* is writing it now"):
            write_one(out)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_users_file_named_like_the_lock_is_left_alone(tmp_path):
    notes = tmp_path / "cells.tif.lock"
    notes.write_text("my notes on this stack")
    with pytest.raises(OutputError, match="cells.tif.lock: exists and is not emseg's lock file; emseg leaves it alone"):
        with OutputLock(tmp_path / "cells.tif"):
            pass
    assert notes.read_text() == "my notes on this stack"
