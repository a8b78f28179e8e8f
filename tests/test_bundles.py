"""Every ISBI bundle through MONAI's own CLI, on real ISBI data, with tiny overrides.

The bundle folders are copied into a temporary project and run from another temporary working
directory with absolute ``--config_file`` paths, so the runs exercise that a bundle is
self-contained: its outputs, default data folder and MLflow store are found from the config's own
location, not from the working directory, and the repository's own models and store are untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import (
    REPO_ROOT,
    config,
    copy_bundles,
    export_bundle,
    mlflow_runs,
    monai_bundle,
    overrides,
    train_bundle,
    verify_bundle,
)

from emseg.io import tiff_spacing

pytestmark = pytest.mark.slow

TINY = {
    "epochs": "2",
    "epoch_length": "2",
    "val_interval": "1",
    "batch_size": "2",
    "crops_per_slice": "2",
    "patch_size": "[64,64]",
    "augmentation_params#sigma": "4",  # a preset parameter: a smaller elastic margin for 64x64 patches
    "download": "False",
}
# the width key of each bundle that makes it tiny (CE-Net's ResNet-34 has no width setting)
NETWORKS = {
    "unet": {"features": "[8,8,16,32,64,8]"},
    "unetpp": {"features": "[8,8,16,32,64,8]"},
    "cenet": {},
    "encdec": {"features": "[8,16,32,64]"},
}
BUNDLES = list(NETWORKS)


def tiny(bundle: str, **values: str) -> list[str]:
    return overrides(**{**TINY, **NETWORKS[bundle], **values})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_bundles(tmp_path_factory.mktemp("project"), BUNDLES)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """The working directory of every run: neither the repository nor the project."""
    return tmp_path_factory.mktemp("cwd")


@pytest.fixture(scope="module", params=BUNDLES)
def trained(request, project, elsewhere, isbi_dir) -> tuple[Path, str]:
    """A bundle trained once: the project and the bundle name."""
    return train_bundle(project, request.param, tiny(request.param, dataset_dir=str(isbi_dir)), cwd=elsewhere)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_and_network_verify(bundle):
    verify_bundle(bundle, *overrides(**NETWORKS[bundle]))


def test_training_writes_checkpoint_and_finished_mlflow_run(trained, elsewhere):
    project, name = trained
    bundle = project / "bundles" / name
    (run_dir,) = list((bundle / "runs").iterdir())
    assert {"run.json", "config.json", "checkpoint_last.pt", "model_best.pt", "metrics.csv",
            "validation_overlay.png"} <= {p.name for p in run_dir.iterdir()}
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "FINISHED" and record["epochs_done"] == 2 and record["best"]["metric"] == "val_v_rand"
    sidecar = json.loads((bundle / "models" / "model.json").read_text())  # promoted at the end
    assert sidecar["run_name"] == run_dir.name and sidecar["mlflow_run_id"] == record["mlflow_run_id"]
    assert (bundle / "models" / "model.pt").read_bytes() == (run_dir / "model_best.pt").read_bytes()
    assert list(elsewhere.iterdir()) == []  # nothing lands in the working directory
    client, runs = mlflow_runs(project, f"emseg-{name}")
    (run,) = [r for r in runs if r.info.run_name == run_dir.name]
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["patch_size"] == "[64, 64]"
    assert run.data.params["dataset"] == "isbi2012" and run.data.params["classes"] == "membrane,interior"
    assert run.data.params["augmentation"] == "unet" and run.data.params["augmentation_params"] == "{'sigma': 4}"
    for key, value in NETWORKS[name].items():
        assert run.data.params[key] == str(json.loads(value))
    history = client.get_metric_history(run.info.run_id, "val_v_rand")
    assert [m.step for m in history] == [1, 2] and all(0 <= m.value <= 1 for m in history)
    # the runs table shows what the run was selected by: the best validation and its epoch, not the last one
    best = max(history, key=lambda m: m.value)
    assert run.data.metrics["best_val_v_rand"] == pytest.approx(best.value) == pytest.approx(record["best"]["value"])
    assert run.data.metrics["best_epoch"] == best.step == record["best"]["epoch"]
    at_best = {m.key: m.value for key in ("val_v_info", "val_mean_dice")
               for m in client.get_metric_history(run.info.run_id, key) if m.step == best.step}
    assert run.data.metrics["best_val_v_info"] == pytest.approx(at_best["val_v_info"])
    assert run.data.metrics["best_val_mean_dice"] == pytest.approx(at_best["val_mean_dice"])
    assert {"train_loss", "val_v_info", "val_dice_membrane", "val_dice_interior", "val_iou_membrane", "val_accuracy",
            "val_mean_dice"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "model_best.pt", "metrics.csv", "validation_overlay.png"} <= artifacts
    assert [m.step for m in client.get_metric_history(run.info.run_id, "iteration/train_loss")] == [1, 2, 3, 4]
    overlays = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert sorted(Path(a).name.split("+")[:3] for a in overlays) == [["validation_overlay", "step", "1"],
                                                                      ["validation_overlay", "step", "2"]]
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert run.data.tags["emseg.bundle_version"] == metadata["version"] and run.data.tags["emseg.version"]


def test_training_logs_its_data_as_mlflow_inputs(trained, isbi_dir):
    """The training and validation slices as MLflow dataset inputs, each with the digest of what the model saw."""
    from emseg.data import datalist
    from emseg.engine.tracking import dataset_digest

    project, name = trained
    _, runs = mlflow_runs(project, f"emseg-{name}")
    (run,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") is None and r.info.run_name.startswith(name)]
    inputs = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation"} and {d.name for d in inputs.values()} == {"isbi2012"}
    for context, part in (("training", "train"), ("validation", "validation")):
        items = datalist("isbi2012", isbi_dir, part, None, None, None, 128, [1, 1], False, [64, 64] if part == "train" else None)
        assert inputs[context].digest == dataset_digest(items) and json.loads(inputs[context].profile)["slices"] == len(items)


def test_evaluate_scores_the_test_split(trained, elsewhere, isbi_dir):
    """Evaluation builds the network the promoted weights were trained as: no widths on the command line."""
    project, name = trained
    monai_bundle("run", "--config_file",
                 f"['{config(project, name, 'train.json')}','{config(project, name, 'evaluate.json')}']",
                 *overrides(dataset_dir=str(isbi_dir), download="False"), cwd=elsewhere)
    (eval_dir,) = list((project / "bundles" / name / "eval").iterdir())
    rows = (eval_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("slice,v_rand,v_rand_split,v_rand_merge,v_info")
    assert [line.split(",")[0] for line in rows[1:]] == [f"isbi_{i:03d}" for i in range(25, 30)]
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["slices"] == 5 and 0 <= summary["v_rand"] <= 1 and summary["v_rand_threshold"] in summary["thresholds"]
    client, runs = mlflow_runs(project, f"emseg-{name}")
    (run,) = [r for r in runs if r.info.run_name == eval_dir.name]
    assert run.info.status == "FINISHED" and run.data.params["eval_split"] == "test"
    # scores of test slices are named test_*, as on the training run; the thresholds they were taken at are params
    assert run.data.metrics["test_v_rand"] == pytest.approx(summary["v_rand"])
    assert {"test_v_info", "test_pixel_error", "test_dice_membrane", "test_hd95_membrane", "test_mean_dice"} \
        <= set(run.data.metrics)
    assert not [key for key in run.data.metrics if not key.startswith("test_") or "threshold" in key]
    assert float(run.data.params["test_v_rand_threshold"]) == summary["v_rand_threshold"]
    assert {k for k in run.data.params if k.startswith("test_")} == {"test_v_rand_threshold", "test_v_info_threshold",
                                                                      "test_pixel_error_threshold"}
    assert summary["scorer"].startswith("isbi2012-fiji")
    sidecar = json.loads((project / "bundles" / name / "models" / "model.json").read_text())
    assert run.data.params["training_run"] == sidecar["run_name"]  # linked to the run that trained the weights
    assert run.data.tags["mlflow.parentRunId"] == sidecar["mlflow_run_id"]
    training = client.get_run(sidecar["mlflow_run_id"])
    assert training.data.metrics["test_v_rand"] == pytest.approx(summary["v_rand"])  # visible from the training run
    evaluation = json.loads((eval_dir / "evaluation.json").read_text())
    assert evaluation["weights"]["sha256"] == sidecar["weights_sha256"] and evaluation["eval_split"] == "test"
    assert run.data.params["weights_sha256"] == sidecar["weights_sha256"]  # not a path the next training overwrites
    assert run.data.params["model_version"] == sidecar["model_version"]
    (test_input,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in test_input.tags}["mlflow.data.context"] == "test"
    assert list(elsewhere.iterdir()) == []


def test_inference_writes_float32_probability_stack(trained, elsewhere, isbi_dir, tmp_path):
    """Inference builds the network the promoted weights were trained as: no widths on the command line."""
    project, name = trained
    output = tmp_path / "probabilities.tif"
    monai_bundle("run", "--config_file", config(project, name, "inference.json"),
                 *overrides(input_path=str(isbi_dir / "test-volume.tif"), output_path=str(output),
                            patch_size="[128,128]"), cwd=elsewhere)
    probabilities = tifffile.imread(output)
    assert probabilities.shape == (30, 512, 512) and probabilities.dtype == np.float32
    assert 0 <= probabilities.min() and probabilities.max() <= 1 and probabilities.std() > 0


def test_blockwise_inference_of_a_zarr_volume_on_dask(trained, elsewhere, isbi_dir, tmp_path):
    """inference_blockwise.json over inference.json: a zarr volume in blocks on a local Dask cluster, to OME-Zarr."""
    import zarr

    project, name = trained
    if name != "unet":
        pytest.skip("one bundle is enough for the block-wise overlay; every bundle renders the same one")
    volume = tifffile.imread(isbi_dir / "test-volume.tif")[:2]
    zarr.create_array(str(tmp_path / "em.zarr"), data=volume, chunks=(1, 256, 256))
    files = f"['{config(project, name, 'inference.json')}','{config(project, name, 'inference_blockwise.json')}']"
    monai_bundle("run", "--config_file", files,
                 *overrides(input_path=str(tmp_path / "em.zarr"), output_path=str(tmp_path / "out.zarr"),
                            block_size="[256,256]", halo="32", workers="1", spacing="[0.05,0.004,0.004]"),
                 cwd=elsewhere)
    image = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    probabilities = image["s0"][:]
    assert probabilities.shape == (2, 512, 512) and probabilities.dtype == np.float32
    assert 0 <= probabilities.min() and probabilities.max() <= 1 and probabilities.std() > 0
    scale = image.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [0.05, 0.004, 0.004] and "done" not in image


def test_instances_from_inference_and_parameters_tuned_on_validation(trained, elsewhere, isbi_dir, tmp_path):
    """output instances (3-D) through the bundle's inference; emseg tune-postprocess on the validation split writes
    the parameters into the bundle's recipe and inference.json and logs the study under the training run."""
    import subprocess
    import sys

    project, name = trained
    if name != "unet":
        pytest.skip("one bundle is enough: every ISBI bundle renders the same instance output and tuning")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, tifffile.imread(isbi_dir / "test-volume.tif")[:3])
    monai_bundle("run", "--config_file", config(project, name, "inference.json"),
                 *overrides(input_path=str(stack), output_path=str(tmp_path / "interior.tif")), cwd=elsewhere)
    # a 2-epoch network is no judge of cells: seeds where its interior probability is above its median
    median = float(np.median(tifffile.imread(tmp_path / "interior.tif")))
    monai_bundle("run", "--config_file", config(project, name, "inference.json"),
                 *overrides(input_path=str(stack), output_path=str(tmp_path / "cells.tif"), output="instances",
                            **{"instances#mode": "3d", "instances#threshold": str(median)}), cwd=elsewhere)
    cells = tifffile.imread(tmp_path / "cells.tif")
    assert cells.shape == (3, 512, 512) and cells.dtype == np.uint16 and cells.max() > 3  # ImageJ's 16 bits
    for output in ("interior.tif", "cells.tif"):  # what Fiji needs: a hyperstack with the data set's voxel size
        assert tiff_spacing(tmp_path / output) == pytest.approx((0.05, 0.004, 0.004))
    assert len(np.intersect1d(cells[0], cells[1])) > 0  # linked across slices

    folder = project / "bundles" / name
    tuned = subprocess.run([sys.executable, "-m", "emseg.cli", "tune-postprocess", str(folder), "--trials", "11",
                            "--set", f"dataset_dir={isbi_dir}", "--set", "download=false"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    recipe = json.loads((folder / "recipe.json").read_text())["instances"]
    assert json.loads((folder / "configs" / "inference.json").read_text())["instances"] == recipe
    client, runs = mlflow_runs(project, f"emseg-{name}")
    study = [run for run in runs if run.data.tags.get("emseg.kind") == "tune-postprocess"]
    training = [run for run in runs if run.info.run_name.startswith(f"{name}-2")]
    assert len(study) == 1 and study[0].data.tags["mlflow.parentRunId"] == training[0].info.run_id
    assert 0 < study[0].data.metrics["challenge_v_rand"] <= 1 and 0 < study[0].data.metrics["best_v_rand"] <= 1
    assert study[0].data.params["instances.threshold"] == str(recipe["threshold"])
    history = client.get_metric_history(study[0].info.run_id, "trial_v_rand")
    assert sorted(m.step for m in history) == list(range(11))


def test_instances_need_a_membrane_bundle(project, elsewhere, tmp_path):
    """A multi-class bundle refuses output instances at start, naming the key and the fix."""
    copy_bundles(project, ["ternausnet11"])
    result = monai_bundle("run", "--config_file", config(project, "ternausnet11", "inference.json"),
                          *overrides(output="instances", output_path=str(tmp_path / "cells.tif")), cwd=elsewhere,
                          check=False)
    line = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert result.returncode != 0 and "output: 'instances'" in line and "mask" in line, line


def test_missing_dataset_dir_stops_with_one_clear_message(project, elsewhere, tmp_path):
    missing = tmp_path / "no-data"
    result = monai_bundle("run", "training", "--config_file", config(project, "unet", "train.json"),
                          *tiny("unet", dataset_dir=str(missing)), cwd=elsewhere, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"ISBI 2012 data not found: {missing} lacks train-volume.tif, train-labels.tif" in output
    assert f"emseg data download isbi2012 --root {missing}" in output


def test_ckpt_export_to_torchscript(trained):
    """MONAI's ckpt_export of the config's ``network`` (the trained network, no widths retyped)."""
    import torch

    project, name = trained
    traced = torch.jit.load(str(export_bundle(project, name, 64)))
    assert traced(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_a_copied_bundle_folder_runs_on_its_own_and_takes_nested_overrides(tmp_path, isbi_dir):
    """bundles/unet copied alone (no bundles/ folder around it) trains and infers; its data folder and MLflow
    store default to the bundle folder. ``--train#trainer#max_epochs 1`` (a nested key) stops training after
    one of the two epochs the schedule is set for."""
    import mlflow

    bundle = tmp_path / "lab" / "membranes-unet"
    shutil.copytree(REPO_ROOT / "bundles" / "unet", bundle, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monai_bundle("run", "training", "--config_file", str(bundle / "configs" / "train.json"),
                 *tiny("unet", dataset_dir=str(isbi_dir)), "--train#trainer#max_epochs", "1", cwd=cwd)
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "mlruns.db").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{bundle}/mlruns.db")
    (run,) = client.search_runs(client.get_experiment_by_name("emseg-unet").experiment_id)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_v_rand")] == [1]
    slices = tmp_path / "three.tif"
    tifffile.imwrite(slices, tifffile.imread(isbi_dir / "test-volume.tif")[:3])
    monai_bundle("run", "--config_file", str(bundle / "configs" / "inference.json"),
                 *overrides(input_path=str(slices), output="mask"), cwd=cwd)
    masks = tifffile.imread(bundle / "eval" / "classes.tif")
    assert masks.shape == (3, 512, 512) and set(np.unique(masks).tolist()) <= {0, 1}
    assert list(cwd.iterdir()) == []


def test_same_seed_and_default_settings_give_identical_weights(tmp_path, isbi_dir, monkeypatch):
    """Two trainings with one seed and the default ``auto`` precision and layout end with the same weights, bit for
    bit: the first measures and keeps its choice for this machine, the second takes it; each records it in run.json."""
    monkeypatch.setenv("EMSEG_CACHE_DIR", str(tmp_path / "cache"))
    project = copy_bundles(tmp_path / "project", ["unet"])
    runs = project / "bundles" / "unet" / "runs"
    for name in ("first", "second"):
        train_bundle(project, "unet", tiny("unet", dataset_dir=str(isbi_dir), run_name=name, register_model="False"),
                     cwd=tmp_path)
    records = [json.loads((runs / name / "run.json").read_text())["settings"] for name in ("first", "second")]
    assert [r["source"] for r in records] == ["measured", "cached"]
    assert (records[0]["amp"], records[0]["channels_last"]) == (records[1]["amp"], records[1]["channels_last"])
    first, second = (torch.load(runs / name / "checkpoint_last.pt", weights_only=False) for name in ("first", "second"))
    for part in ("model", "weight_average"):
        assert first[part].keys() == second[part].keys()
        for key, value in first[part].items():
            if torch.is_tensor(value):
                assert torch.equal(value, second[part][key]), (part, key)
    _, found = mlflow_runs(project, "emseg-unet")
    assert len({(r.data.params["amp"], r.data.params["channels_last"]) for r in found}) == 1
    assert len({r.data.metrics["train_loss"] for r in found}) == 1