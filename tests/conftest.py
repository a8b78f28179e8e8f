"""Shared fixtures and helpers: the real EM data in ../shared/data (override with EMSEG_SHARED_DATA),
running the bundle CLI on copies of the bundles from a working directory of its own, a few training steps."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
ISBI_DIR = SHARED_DATA / "isbi2012"
EPFL_DIR = SHARED_DATA / "epfl-hippocampus-multiclass"
REFERENCE_SCORES_DIR = SHARED_DATA / "isbi2012-reference-scores"

# One precision-choice cache for the whole session (the trainings and inferences the tests start inherit it), never
# the user's own: the first tiny training measures, the others reuse its choice as on a lab's machine.
if "EMSEG_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["EMSEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="emseg-test-cache-")


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    """Folder with the real ISBI 2012 stacks."""
    if not (ISBI_DIR / "train-volume.tif").is_file():
        pytest.fail(f"real ISBI data not found in {ISBI_DIR}; set EMSEG_SHARED_DATA to the shared data folder")
    return ISBI_DIR


@pytest.fixture(scope="session")
def isbi_volumes(isbi_dir) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) uint8 volumes of the ISBI training stack, read with tifffile directly."""
    import tifffile

    return tifffile.imread(isbi_dir / "train-volume.tif"), tifffile.imread(isbi_dir / "train-labels.tif")


@pytest.fixture(scope="session")
def reference_scores() -> dict:
    """The ISBI challenge's own scores (Fiji's code) of four probability maps of training slices 25-29: the
    parsed fiji_scores.json, with each map's file as an absolute path."""
    import json

    path = REFERENCE_SCORES_DIR / "fiji_scores.json"
    if not path.is_file():
        pytest.fail(f"{path} not found; set EMSEG_SHARED_DATA to the shared data folder")
    reference = json.loads(path.read_text())
    for entry in reference["maps"].values():
        entry["file"] = REFERENCE_SCORES_DIR / entry["file"]
    return reference


@pytest.fixture(scope="session")
def epfl_dir() -> Path:
    if not (EPFL_DIR / "train" / "slices").is_dir():
        pytest.fail(f"real EPFL data not found in {EPFL_DIR}; set EMSEG_SHARED_DATA to the shared data folder")
    return EPFL_DIR


@pytest.fixture
def stack(isbi_volumes) -> np.ndarray:
    """Three 128x96 crops of real ISBI slices."""
    return isbi_volumes[0][:3, :128, :96]


@pytest.fixture
def inputs(tmp_path, stack) -> dict:
    """The same three slices as a TIFF stack, a PNG folder, HDF5 and NIfTI."""
    import h5py

    from emseg.io import write_volume

    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = stack
        f["other"] = stack
    return {
        "tiff": write_volume(tmp_path / "v.tif", stack, "tiff", "uint8"),
        "folder": write_volume(tmp_path / "slices", stack, "png"),
        "hdf5": tmp_path / "v.h5",
        "nifti": write_volume(tmp_path / "v.nii.gz", stack, "nifti", "uint8"),
    }



def training_losses(network, loss_fn, image, target, steps: int, lr: float) -> list[float]:
    """Loss of each of ``steps`` Adam steps of ``network`` on one batch."""
    import torch

    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(network(image), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def monai_bundle(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ARGS`` as a user would, with no MLflow URI from the environment."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        pytest.fail(f"monai.bundle {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def overrides(**values: str) -> list[str]:
    """``--key value`` arguments for the bundle CLI."""
    return [item for key, value in values.items() for item in (f"--{key}", value)]


def copy_bundles(root: Path, bundles) -> Path:
    """A temporary project at ``root`` with copies of the bundle folders ``bundles`` (under ``root/bundles``)."""
    for name in bundles:
        shutil.copytree(REPO_ROOT / "bundles" / name, root / "bundles" / name,
                        ignore=shutil.ignore_patterns("models", "runs", "eval"))
    return root


def mlflow_runs(project: Path, experiment: str):
    """The MLflow client of ``project``'s default store and the runs of ``experiment``."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project}/mlruns.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment} in {project}/mlruns.db"
    return client, client.search_runs(exp.experiment_id)


SCHEMA = REPO_ROOT / "emseg" / "resources" / "bundle_metadata_schema.json"


def verify_bundle(bundle: str, *network_args: str, n: int = 4) -> None:
    """MONAI's verify_metadata (against the vendored schema, offline) and verify_net_in_out of ``bundle``."""
    configs = REPO_ROOT / "bundles" / bundle / "configs"
    result = monai_bundle("verify_metadata", "--meta_file", str(configs / "metadata.json"), "--filepath", str(SCHEMA),
                          cwd=REPO_ROOT)
    assert "metadata is verified with no error" in result.stdout + result.stderr
    monai_bundle("verify_net_in_out", "network_def", "--meta_file", str(configs / "metadata.json"), "--config_file",
                 str(configs / "train.json"), "--n", str(n), "--any", "1", "--device", "cpu", *network_args,
                 cwd=REPO_ROOT)


def config(project: Path, bundle: str, name: str) -> str:
    """Absolute path of config ``name`` of ``bundle`` in ``project``."""
    return str(project / "bundles" / bundle / "configs" / name)


def train_bundle(project: Path, bundle: str, args: list[str], cwd: Path) -> tuple[Path, str]:
    """Run the ``training`` workflow of ``bundle`` in ``project`` from ``cwd`` (absolute config path); return both."""
    monai_bundle("run", "training", "--config_file", config(project, bundle, "train.json"), *args, cwd=cwd)
    return project, bundle


TINY_FEATURES = "[8,8,16,32,64,8]"


def tiny_training(**values) -> list[str]:
    """Bundle-CLI overrides that train a U-Net in seconds with the precision pinned (float32, channels first), so
    no test measures precision candidates first."""
    settings = {"epochs": "1", "epoch_length": "1", "val_interval": "1", "batch_size": "2", "crops_per_slice": "2",
                "patch_size": "[64,64]", "features": TINY_FEATURES, "download": "False", "checkpoint_interval": "0",
                "register_model": "False", "amp": "False", "channels_last": "False", **values}
    return overrides(**{k: str(v) for k, v in settings.items()})


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory, isbi_dir) -> Path:
    """The one tiny trained bundle of a test session: a project with the U-Net bundle trained on ISBI for 2 short
    epochs (run ``parent``), promoted and registered in the project's MLflow store. Built once; tests that change it
    use :func:`tiny_unet_copy`."""
    project = copy_bundles(tmp_path_factory.mktemp("tiny-unet"), ["unet"])
    monai_bundle("run", "training", "--config_file", config(project, "unet", "train.json"),
                 *tiny_training(dataset_dir=isbi_dir, register_model="True", epochs=2), "--run_name", "parent",
                 cwd=project)
    return project


def tiny_unet_copy(tiny_unet: Path, folder: Path) -> Path:
    """A copy of the :func:`tiny_unet` project in ``folder`` (its MLflow store included) for a test to change."""
    shutil.copytree(tiny_unet, folder, dirs_exist_ok=True)
    return folder


def export_bundle(project: Path, bundle: str, patch: int, *network_args: str) -> Path:
    """MONAI's ckpt_export of ``bundle``'s promoted weights to TorchScript (traced at one patch), with the network
    they were trained as (the config's ``network``)."""
    target = project / f"{bundle}.ts"
    folder = project / "bundles" / bundle
    monai_bundle("ckpt_export", "network", "--filepath", str(target), "--ckpt_file", str(folder / "models/model.pt"),
                 "--meta_file", config(project, bundle, "metadata.json"), "--config_file",
                 config(project, bundle, "inference.json"), "--use_trace", "True",
                 "--input_shape", f"[1,1,{patch},{patch}]", *network_args, cwd=project)
    return target
