"""A full disk while a training writes its checkpoint or metrics, or while a command writes its output: what was
there before stays intact and the run ends with one line naming the file and the cause. The disk is a small tmpfs
mounted for the test (root, or a user namespace where the kernel allows one); elsewhere the tests are skipped."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import config, copy_bundles, tiny_training

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A fresh 64 MiB tmpfs at ``tmp_path/disk`` (unmounted afterwards)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until ``disk`` has no space left; return it."""
    filler = disk / "filler"
    block = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_a_full_disk_mid_training_keeps_the_last_checkpoint_and_the_run_resumes(small_disk, tmp_path, isbi_dir):
    project = copy_bundles(small_disk / "lab", ["unet"])
    run_dir = project / "bundles" / "unet" / "runs" / "full"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns.db"}  # the store on another disk
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
               config(project, "unet", "train.json"), "--run_name", "full"]
    process = subprocess.Popen([*command, *tiny_training(dataset_dir=isbi_dir, epochs=200, epoch_length=2)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint_last.pt").is_file() or not (run_dir / "metrics.csv").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-3000:]
        time.sleep(0.1)
    filler = fill(small_disk)
    output = process.communicate(timeout=300)[0]

    assert process.returncode != 0
    line = last_line(output)
    assert line.startswith("emseg: error: ") and "the disk is full" in line, output[-3000:]
    assert str(run_dir) in line  # names the file (the checkpoint, metrics.csv, run.json or model_best.pt)
    # everything there before the disk filled is whole: loadable, parsable, consistent
    checkpoint = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch") and len(rows) - 1 >= checkpoint["epoch"] >= 1
    record = json.loads((run_dir / "run.json").read_text())
    assert record["epochs_done"] >= checkpoint["epoch"]
    assert not list(run_dir.glob(".*.part"))  # no half-written temporary files left

    filler.unlink()  # space again: the run resumes from its last checkpoint and finishes
    epochs = record["epochs_done"] + 1
    resumed = subprocess.run([*command, *tiny_training(dataset_dir=isbi_dir, epochs=epochs, epoch_length=2)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "FINISHED" and record["resumed"][-1]["epoch"] == checkpoint["epoch"]


def test_a_full_disk_while_writing_an_output_leaves_the_earlier_output_as_it_was(small_disk, tmp_path):
    rng = np.random.default_rng(0)
    probabilities = tmp_path / "interior.tif"
    tifffile.imwrite(probabilities, rng.random((8, 512, 512), dtype=np.float32))
    earlier = small_disk / "cells.tif"
    tifffile.imwrite(earlier, np.arange(64, dtype=np.uint32).reshape(1, 8, 8))
    before = earlier.read_bytes()
    filler = fill(small_disk)
    filler.write_bytes(b"\0" * (filler.stat().st_size - (1 << 20)))  # leave 1 MiB: less than the 8 MiB output

    for output, extra in ((small_disk / "new.tif", []), (earlier, ["--overwrite"])):
        done = subprocess.run([sys.executable, "-m", "emseg.cli", "segment", str(probabilities), str(output), *extra],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stdout + done.stderr
        line = last_line(done.stderr)
        assert line.startswith("emseg: error: ") and str(output) in line and "disk is full" in line, done.stderr
    assert earlier.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["cells.tif", "filler"]  # nothing half-written
