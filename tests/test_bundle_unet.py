"""The U-Net bundle through MONAI's own CLI, on real ISBI data, with tiny overrides.

The bundle's configs are copied into a temporary project (``tmp/bundles/unet``) so the
runs exercise the real bundle discovery, output layout and default MLflow store
without touching the repository's own models or store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tifffile

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow

BUNDLE = REPO_ROOT / "bundles" / "unet"
SCHEMA = REPO_ROOT / "emseg" / "resources" / "bundle_metadata_schema.json"
TINY = {
    "epochs": "2",
    "epoch_length": "2",
    "val_interval": "1",
    "batch_size": "2",
    "crops_per_slice": "2",
    "patch_size": "[64,64]",
    "features": "[8,8,16,32,64,8]",
    "download": "False",
}


def monai_bundle(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ARGS`` as a user would, with no MLflow URI from the environment."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        pytest.fail(f"monai.bundle {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def overrides(**values: str) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", value)]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(BUNDLE / "configs", root / "bundles" / "unet" / "configs")
    return root


@pytest.fixture(scope="module")
def trained(project, isbi_dir) -> Path:
    """Train once from the project root; return the project."""
    monai_bundle("run", "training", "--config_file", "bundles/unet/configs/train.json",
                 *overrides(dataset_dir=str(isbi_dir), **TINY), cwd=project)
    return project


def _runs(project: Path, experiment: str = "emseg-unet"):
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlruns.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment} in {project}/mlruns.db"
    return client, client.search_runs(exp.experiment_id)


def test_metadata_verifies_offline():
    result = monai_bundle("verify_metadata", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                          "--filepath", str(SCHEMA), cwd=REPO_ROOT)
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_network_matches_metadata():
    monai_bundle("verify_net_in_out", "network_def", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                 "--config_file", str(BUNDLE / "configs" / "train.json"), "--n", "4", "--any", "1",
                 "--device", "cpu", "--features", TINY["features"], cwd=REPO_ROOT)


def test_configs_parse():
    from monai.bundle import ConfigParser

    for files in (["train.json"], ["train.json", "evaluate.json"], ["inference.json"]):
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / f) for f in files])
        for key in ("run", "bundle_root", "network_def"):
            assert key in parser, f"{files} lacks {key}"
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    for key in ("epochs", "batch_size", "learning_rate", "patch_size", "features", "device", "amp", "training"):
        assert key in train


def test_training_writes_checkpoint_and_finished_mlflow_run(trained):
    bundle = trained / "bundles" / "unet"
    assert (bundle / "models" / "model.pt").is_file()
    (run_dir,) = list((bundle / "runs").iterdir())
    assert (run_dir / "checkpoint_final.pt").is_file() and (run_dir / "validation_overlay.png").is_file()
    client, runs = _runs(trained)
    (run,) = [r for r in runs if r.info.run_name == run_dir.name]
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["features"] == "[8, 8, 16, 32, 64, 8]"
    history = client.get_metric_history(run.info.run_id, "val_v_rand")
    assert [m.step for m in history] == [1, 2] and all(0 <= m.value <= 1 for m in history)
    assert {"train_loss", "val_v_info", "val_membrane_dice", "val_accuracy", "val_interior_dice"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "model.pt", "validation_overlay.png"} <= artifacts


def test_training_from_inside_the_bundle_folder(trained, isbi_dir):
    bundle = trained / "bundles" / "unet"
    monai_bundle("run", "training", "--config_file", "configs/train.json",
                 *overrides(dataset_dir=str(isbi_dir), **{**TINY, "epochs": "1"}), cwd=bundle)
    assert len(list((bundle / "runs").iterdir())) == 2  # a new run folder next to the first
    assert not (bundle / "bundles").exists() and not (bundle / "mlruns.db").exists()
    _, runs = _runs(trained)
    assert len({r.info.run_name for r in runs}) == len(runs) >= 2
    assert all(r.info.status == "FINISHED" for r in runs)


def test_evaluate_scores_the_test_split(trained, isbi_dir):
    monai_bundle("run", "--config_file",
                 "['bundles/unet/configs/train.json','bundles/unet/configs/evaluate.json']",
                 *overrides(dataset_dir=str(isbi_dir), **TINY), cwd=trained)
    (eval_dir,) = list((trained / "bundles" / "unet" / "eval").iterdir())
    rows = (eval_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("slice,v_rand,v_rand_split,v_rand_merge,v_info")
    assert [line.split(",")[0] for line in rows[1:]] == [f"isbi_{i:03d}" for i in range(25, 30)]
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["slices"] == 5 and 0 <= summary["v_rand"] <= 1 and summary["v_rand_threshold"] in summary["thresholds"]
    _, runs = _runs(trained)
    (run,) = [r for r in runs if r.info.run_name == eval_dir.name]
    assert run.info.status == "FINISHED" and run.data.params["eval_split"] == "test"
    assert run.data.metrics["v_rand"] == pytest.approx(summary["v_rand"])
    assert {"v_info", "pixel_error", "dice_membrane", "hd95_membrane"} <= set(run.data.metrics)


def test_inference_writes_float32_probability_stack(trained, isbi_dir, tmp_path):
    output = tmp_path / "probabilities.tif"
    monai_bundle("run", "--config_file", "bundles/unet/configs/inference.json",
                 *overrides(input_path=str(isbi_dir / "test-volume.tif"), output_path=str(output),
                            features=TINY["features"], patch_size="[128,128]"), cwd=trained)
    probabilities = tifffile.imread(output)
    assert probabilities.shape == (30, 512, 512) and probabilities.dtype == np.float32
    assert 0 <= probabilities.min() and probabilities.max() <= 1 and probabilities.std() > 0


def test_missing_dataset_dir_stops_with_one_clear_message(project, tmp_path):
    missing = tmp_path / "no-data"
    result = monai_bundle("run", "training", "--config_file", "bundles/unet/configs/train.json",
                          *overrides(dataset_dir=str(missing), **TINY), cwd=project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"ISBI 2012 data not found: {missing} lacks train-volume.tif, train-labels.tif" in output
    assert f"emseg data download isbi2012 --root {missing}" in output
