"""multi_gpu_train.json under torchrun: 2 processes on the CPU (gloo) train one run, owned by rank 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import config, copy_bundles, mlflow_runs, overrides
from monai.networks.nets import BasicUNet

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("feed", ["loader", "device"])
def test_two_processes_train_one_run(tmp_path, isbi_dir, feed):
    project = copy_bundles(tmp_path, ["unet"])
    files = f"['{config(project, 'unet', 'train.json')}','{config(project, 'unet', 'multi_gpu_train.json')}']"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "monai.bundle", "run",
         "--config_file", files, *overrides(dataset_dir=str(isbi_dir), download="False", epochs="2",
                                           epoch_length="2", val_interval="1", val_start_epoch="1", batch_size="2",
                                           crops_per_slice="1", patch_size="[64,64]", features="[4,4,8,8,16,4]",
                                           feed=feed)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((project / "bundles" / "unet" / "runs").iterdir())
    assert len(runs) == 1  # the ranks agreed on one run name; only rank 0 wrote
    assert {"model_best.pt", "checkpoint_last.pt", "run.json", "metrics.csv"} <= {p.name for p in runs[0].iterdir()}
    _, mlflow = mlflow_runs(project, "emseg-unet")
    assert [(r.info.run_name, r.info.status, r.data.params["feed"]) for r in mlflow] == [
        (runs[0].name, "FINISHED", feed)]
    weights = torch.load(project / "bundles" / "unet" / "models" / "model.pt", map_location="cpu")
    weights = weights.get("model", weights)
    BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 16, 4), norm="batch").load_state_dict(weights)  # no "module." prefix
