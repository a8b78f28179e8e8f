"""Block-wise inference on Dask over zarr: no seams against whole-slice inference, and a rerun resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from monai.networks.nets import BasicUNet
from monai.transforms import Activations

from emseg.blockwise import (
    segment_blockwise,
    slice_statistics,
)
from emseg.engine.precision import AutocastInferer
from emseg.engine.windows import SliceInferer
from emseg.io import read_volume
from emseg.io.safety import OutputError

BLOCK, HALO = (128, 128), 96


@pytest.fixture(scope="module")
def volume(isbi_volumes, tmp_path_factory):
    """Two ISBI slices of 384x512 as a zarr volume chunked by the blocks, and the array itself."""
    data = isbi_volumes[0][:2, :384, :]
    path = tmp_path_factory.mktemp("zarr") / "em.zarr"
    zarr.create_array(str(path), data=data, chunks=(1, *BLOCK))
    return path, data


def _model():
    torch.manual_seed(0)
    network = BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), norm="batch").eval()
    return network, AutocastInferer(SliceInferer(roi_size=(64, 64)), amp=False), Activations(softmax=True)


@pytest.mark.slow
def test_blocks_match_whole_slices_away_from_the_border(volume, tmp_path):
    path, data = volume
    network, inferer, softmax = _model()
    summary = segment_blockwise(network, inferer, path, tmp_path / "out.zarr", block=BLOCK, halo=HALO,
                                postprocessing=softmax, spacing=(0.05, 0.004, 0.004), workers=1)
    assert {k: summary[k] for k in ("blocks", "computed", "skipped")} == {"blocks": 2 * 3 * 4, "computed": 24, "skipped": 0}
    assert len(summary["worker_peak_mib"]) == 1 and summary["worker_peak_mib"][0] > 0
    blockwise = read_volume(tmp_path / "out.zarr")
    with torch.inference_mode():
        whole = np.stack([softmax(inferer(torch.from_numpy(((s - s.mean()) / s.std()).astype(np.float32))[None, None],
                                          network)[0])[1].numpy() for s in data.astype(np.float64)])
    inner = (slice(None), slice(HALO, -HALO), slice(HALO, -HALO))
    assert np.abs(blockwise[inner] - whole[inner]).max() < 1e-3
    assert np.abs(blockwise - whole).max() < 0.2  # at the volume's edge mirrored context differs a little
    assert not (tmp_path / "out.zarr.part").exists()
    with pytest.raises(OutputError, match="out.zarr: exists; choose another output"):
        segment_blockwise(network, inferer, path, tmp_path / "out.zarr", block=BLOCK)


JOB = """
import sys, time
import torch
from monai.networks.nets import BasicUNet
from monai.transforms import Activations
from emseg.blockwise import segment_blockwise
from emseg.engine.precision import AutocastInferer
from emseg.engine.windows import SliceInferer

class SlowInferer:  # at least 0.3 s a block, so the job is killed half-way
    def __init__(self, inferer):
        self.inferer = inferer

    def __call__(self, x, network):
        time.sleep(0.3)
        return self.inferer(x, network)

if __name__ == "__main__":
    torch.manual_seed(0)
    network = BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), norm="batch").eval()
    inferer = SlowInferer(AutocastInferer(SliceInferer(roi_size=(64, 64)), amp=False))
    segment_blockwise(network, inferer, sys.argv[1], sys.argv[2], output="mask", block=(128, 128), halo=96,
                      postprocessing=Activations(softmax=True), workers=1)
"""


@pytest.mark.slow
def test_a_killed_job_rerun_computes_only_the_missing_blocks(volume, tmp_path):
    """The job runs in a subprocess (with its Dask cluster) and is killed with SIGKILL after some blocks; the same
    job run again computes exactly the blocks not recorded as done, and gives the output of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path, data = volume
    (tmp_path / "job.py").write_text(JOB)
    output = tmp_path / "out.zarr"
    job = subprocess.Popen([sys.executable, str(tmp_path / "job.py"), str(path), str(output)], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial, deadline = tmp_path / "out.zarr.part", time.monotonic() + 180
    try:
        while time.monotonic() < deadline and job.poll() is None:
            try:
                if zarr.open_group(str(partial), mode="r")["done"][:].sum() >= 5:
                    break
            except (FileNotFoundError, KeyError, ValueError):
                pass  # the store is not made yet
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    time.sleep(0.5)  # the cluster's worker dies with the group
    assert not output.exists(), "the job finished before it was killed"
    done = int(zarr.open_group(str(partial), mode="r")["done"][:].sum())
    assert 5 <= done < 24
    network, inferer, softmax = _model()
    summary = segment_blockwise(network, inferer, path, output, output="mask", block=BLOCK, halo=HALO,
                                postprocessing=softmax, workers=1)
    assert {k: summary[k] for k in ("blocks", "computed", "skipped")} == {"blocks": 24, "computed": 24 - done,
                                                                          "skipped": done}
    fresh = segment_blockwise(network, inferer, path, tmp_path / "fresh.zarr", output="mask", block=BLOCK, halo=HALO,
                              postprocessing=softmax, workers=1)
    assert fresh["computed"] == 24
    np.testing.assert_array_equal(read_volume(output), read_volume(tmp_path / "fresh.zarr"))


@pytest.mark.slow
def test_a_second_job_on_the_same_output_is_refused_while_the_first_runs(volume, tmp_path):
    """Two block-wise jobs writing one output never interleave: the second is refused at once, naming the first
    job's process, and the first finishes with every block written once."""
    import subprocess
    import sys
    import time

    path, _ = volume
    (tmp_path / "job.py").write_text(JOB)
    output = tmp_path / "out.zarr"
    first = subprocess.Popen([sys.executable, str(tmp_path / "job.py"), str(path), str(output)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial, deadline = tmp_path / "out.zarr.part", time.monotonic() + 180
    while not partial.exists():
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-3000:]
        time.sleep(0.05)
    network, inferer, softmax = _model()
    with pytest.raises(OutputError, match=rf"out.zarr: job {first.pid} on .* is writing it now; wait for that job"):
        segment_blockwise(network, inferer, path, output, output="mask", block=BLOCK, halo=HALO,
                          postprocessing=softmax, workers=1)
    assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    assert not partial.exists() and not (tmp_path / "out.zarr.lock").exists()
    segment_blockwise(network, inferer, path, tmp_path / "alone.zarr", output="mask", block=BLOCK, halo=HALO,
                      postprocessing=softmax, workers=1)
    np.testing.assert_array_equal(read_volume(output), read_volume(tmp_path / "alone.zarr"))


def test_statistics_are_those_of_whole_slices(volume):
    path, data = volume
    mean, std = slice_statistics(path)
    np.testing.assert_allclose(mean, data.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, data.std(axis=(1, 2)), rtol=1e-12)


def test_one_local_worker_per_gpu_each_on_its_own(monkeypatch):
    from emseg.blockwise import local_workers, worker_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert local_workers("cuda", None) == 4 and local_workers("cpu", None) == 1 and local_workers("cuda", 2) == 2
    assert [worker_device("cuda", name, 4) for name in range(6)] == [torch.device("cuda", i % 4) for i in range(6)]
    assert worker_device("cuda:1", 3, 4) == torch.device("cuda", 1)  # asked for by index
    assert worker_device("cuda", "tcp://10.0.0.2:4000", 1) == torch.device("cuda")  # a worker of another cluster
    assert worker_device("cpu", 2, 4) == torch.device("cpu")
