"""The TernausNet bundles through MONAI's own CLI: multi-class EPFL by default, ISBI with --dataset.

Like tests/test_bundles.py, copies of the bundles run from a working directory of their own with tiny
overrides (2 patches of 256x256 per step, decoder width 8, 2 training slices and 1 validation slice; the VGG
encoders keep their ImageNet widths).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import (
    config,
    copy_bundles,
    export_bundle,
    mlflow_runs,
    monai_bundle,
    overrides,
    train_bundle,
    verify_bundle,
)

pytestmark = pytest.mark.slow

BUNDLES = ["ternausnet11", "ternausnet16"]
CLASSES = ["background", "membranes", "mitochondria", "vesicles", "PSD", "axon"]
TINY = {
    "epochs": "1",
    "epoch_length": "2",
    "val_interval": "1",
    "batch_size": "2",
    "crops_per_slice": "1",
    "patch_size": "[256,256]",
    "features": "8",
    "download": "False",
    "split": "{'train': [0, 1], 'validation': [2]}",  # one whole slice to validate (768x1024 on EPFL)
    "amp": "True",  # pinned: timing 4 precision/layout candidates of a VGG step costs more than this training
    "channels_last": "False",  # ("auto" is exercised by the ISBI bundles' tests)
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_bundles(tmp_path_factory.mktemp("project"), BUNDLES)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(scope="module", params=BUNDLES)
def trained(request, project, elsewhere, epfl_dir) -> tuple[Path, str]:
    """A bundle trained once on the EPFL data: the project and the bundle name."""
    return train_bundle(project, request.param, overrides(dataset_dir=str(epfl_dir), **TINY), cwd=elsewhere)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_and_network_verify(bundle):
    verify_bundle(bundle, "--features", "8", n=2)


def test_training_logs_per_class_scores(trained):
    project, name = trained
    bundle = project / "bundles" / name
    assert (bundle / "models" / "model.pt").is_file()
    assert json.loads((bundle / "models" / "model.json").read_text())["metric"] == "val_mean_dice"
    (run_dir,) = list((bundle / "runs").iterdir())
    assert (run_dir / "validation_overlay.png").is_file()
    client, runs = mlflow_runs(project, f"emseg-{name}")
    (run,) = [r for r in runs if r.info.run_name == run_dir.name]
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset"] == "epfl" and run.data.params["classes"] == ",".join(CLASSES)
    per_class = {f"val_{m}_{c}" for m in ("dice", "iou") for c in CLASSES[1:]}
    assert per_class | {"val_mean_dice", "val_accuracy", "train_loss"} <= set(run.data.metrics)
    assert "val_v_rand" not in run.data.metrics  # no challenge scores without a membrane/interior task
    assert 0 <= run.data.metrics["val_mean_dice"] <= 1


def test_evaluate_writes_per_class_report(trained, elsewhere, epfl_dir):
    project, name = trained
    monai_bundle("run", "--config_file",
                 f"['{config(project, name, 'train.json')}','{config(project, name, 'evaluate.json')}']",
                 *overrides(dataset_dir=str(epfl_dir), **TINY), cwd=elsewhere)
    (eval_dir,) = list((project / "bundles" / name / "eval").iterdir())
    rows = (eval_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["slice", "accuracy", "dice_background", "iou_background", "hd95_background"]
    assert len(rows) == 1 + 5  # the 5 EPFL test slices
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["classes"] == CLASSES and 0 <= summary["mean_dice"] <= 1
    _, runs = mlflow_runs(project, f"emseg-{name}")
    (run,) = [r for r in runs if r.info.run_name == eval_dir.name]
    assert run.data.metrics["test_dice_membranes"] == pytest.approx(summary["dice_membranes"])
    assert run.data.metrics["test_mean_dice"] == pytest.approx(summary["mean_dice"])  # the key metric and the report


def test_inference_writes_class_map_and_probabilities(trained, elsewhere, epfl_dir, tmp_path):
    project, name = trained
    classes, probabilities = tmp_path / "classes.tif", tmp_path / "probabilities.tif"
    monai_bundle("run", "--config_file", config(project, name, "inference.json"),
                 *overrides(dataset_dir=str(epfl_dir), probabilities_path=str(probabilities), patch_size="[256,256]"),
                 cwd=elsewhere)
    (project / "bundles" / name / "eval" / "classes.tif").rename(classes)  # default input and output of the data set
    labels, probs = tifffile.imread(classes), tifffile.imread(probabilities)
    assert labels.shape == (5, 768, 1024) and labels.dtype == np.uint8 and labels.max() < 6
    assert probs.shape == (5, 6, 768, 1024) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(1), labels)


def test_ternausnet_trains_on_isbi_with_the_documented_override(project, elsewhere, isbi_dir):
    monai_bundle("run", "training", "--config_file", config(project, "ternausnet11", "train.json"),
                 *overrides(dataset="isbi2012", dataset_dir=str(isbi_dir), run_name="isbi-run", **TINY), cwd=elsewhere)
    client, runs = mlflow_runs(project, "emseg-ternausnet11")
    (run,) = [r for r in runs if r.info.run_name == "isbi-run"]
    assert run.info.status == "FINISHED" and run.data.params["classes"] == "membrane,interior"
    assert {"val_v_rand", "val_dice_interior", "val_mean_dice"} <= set(run.data.metrics)  # the membrane task


def test_ckpt_export_to_torchscript(trained):
    project, name = trained
    assert export_bundle(project, name, 256).is_file()
