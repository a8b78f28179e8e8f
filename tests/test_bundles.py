"""Every bundle through MONAI's own CLI, on real ISBI data, with tiny overrides.

The bundles' configs and the shared fragments they reference (``bundles/common``) are
copied into a temporary project, so the runs exercise the real bundle discovery,
output layout and default MLflow store without touching the repository's own models
or store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import REPO_ROOT, copy_bundles, export_bundle, mlflow_runs, monai_bundle, overrides, train_bundle, verify_bundle

pytestmark = pytest.mark.slow

TINY = {
    "epochs": "2",
    "epoch_length": "2",
    "val_interval": "1",
    "batch_size": "2",
    "crops_per_slice": "2",
    "patch_size": "[64,64]",
    "download": "False",
}
# the network keys of each bundle that make it tiny (CE-Net's ResNet-34 has no width setting)
NETWORKS = {
    "unet": {"features": "[8,8,16,32,64,8]"},
    "unetpp": {"features": "[8,8,16,32,64,8]"},
    "cenet": {},
    "encdec": {"widths": "[8,16,32,64]"},
}
BUNDLES = list(NETWORKS)


def tiny(bundle: str, **values: str) -> list[str]:
    return overrides(**{**TINY, **NETWORKS[bundle], **values})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_bundles(tmp_path_factory.mktemp("project"), BUNDLES)


@pytest.fixture(scope="module", params=BUNDLES)
def trained(request, project, isbi_dir) -> tuple[Path, str]:
    """A bundle trained once from the project root: the project and the bundle name."""
    return train_bundle(project, request.param, tiny(request.param, dataset_dir=str(isbi_dir)))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_and_network_verify(bundle):
    verify_bundle(bundle, *overrides(**NETWORKS[bundle]))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_configs_parse_with_the_same_keys(bundle, monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.chdir(REPO_ROOT)  # shared fragments are referenced from the repository root
    configs = REPO_ROOT / "bundles" / bundle / "configs"
    unet_configs = REPO_ROOT / "bundles" / "unet" / "configs"
    for files in (["train.json"], ["train.json", "evaluate.json"], ["inference.json"]):
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in files])
        parser.parse()  # resolves the references to bundles/common
        for key in ("run", "bundle_root", "network_def", "device", "ckpt_path" if files == ["inference.json"] else "ckpt_dir"):
            assert key in parser, f"{bundle} {files} lacks {key}"
    def network_keys(folder: Path) -> set[str]:  # the hyper-parameters of the network, listed by each bundle
        return set(json.loads((folder / "train.json").read_text())["network_parameters"])

    for name in ("train.json", "evaluate.json", "inference.json"):
        own = set(json.loads((configs / name).read_text())) - network_keys(configs)
        reference = set(json.loads((unet_configs / name).read_text())) - network_keys(unet_configs)
        assert own == reference, f"{bundle}/{name} keys differ from unet's: {own ^ reference}"
    assert {p.name for p in configs.iterdir()} == {p.name for p in unet_configs.iterdir()}
    assert (configs.parent / "LICENSE").is_file() and (configs.parent / "docs" / "README.md").is_file()


def test_training_writes_checkpoint_and_finished_mlflow_run(trained):
    project, name = trained
    bundle = project / "bundles" / name
    assert (bundle / "models" / "model.pt").is_file()
    (run_dir,) = list((bundle / "runs").iterdir())
    assert (run_dir / "checkpoint_final.pt").is_file() and (run_dir / "validation_overlay.png").is_file()
    client, runs = mlflow_runs(project, f"emseg-{name}")
    (run,) = [r for r in runs if r.info.run_name == run_dir.name]
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2" and run.data.params["patch_size"] == "[64, 64]"
    for key, value in NETWORKS[name].items():
        assert run.data.params[key] == str(json.loads(value))
    history = client.get_metric_history(run.info.run_id, "val_v_rand")
    assert [m.step for m in history] == [1, 2] and all(0 <= m.value <= 1 for m in history)
    assert {"train_loss", "val_v_info", "val_membrane_dice", "val_accuracy", "val_interior_dice"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "model.pt", "validation_overlay.png"} <= artifacts


def test_evaluate_scores_the_test_split(trained, isbi_dir):
    project, name = trained
    monai_bundle("run", "--config_file",
                 f"['bundles/{name}/configs/train.json','bundles/{name}/configs/evaluate.json']",
                 *tiny(name, dataset_dir=str(isbi_dir)), cwd=project)
    (eval_dir,) = list((project / "bundles" / name / "eval").iterdir())
    rows = (eval_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("slice,v_rand,v_rand_split,v_rand_merge,v_info")
    assert [line.split(",")[0] for line in rows[1:]] == [f"isbi_{i:03d}" for i in range(25, 30)]
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["slices"] == 5 and 0 <= summary["v_rand"] <= 1 and summary["v_rand_threshold"] in summary["thresholds"]
    _, runs = mlflow_runs(project, f"emseg-{name}")
    (run,) = [r for r in runs if r.info.run_name == eval_dir.name]
    assert run.info.status == "FINISHED" and run.data.params["eval_split"] == "test"
    assert run.data.metrics["v_rand"] == pytest.approx(summary["v_rand"])
    assert {"v_info", "pixel_error", "dice_membrane", "hd95_membrane"} <= set(run.data.metrics)


def test_inference_writes_float32_probability_stack(trained, isbi_dir, tmp_path):
    project, name = trained
    output = tmp_path / "probabilities.tif"
    monai_bundle("run", "--config_file", f"bundles/{name}/configs/inference.json",
                 *overrides(input_path=str(isbi_dir / "test-volume.tif"), output_path=str(output),
                            patch_size="[128,128]", **NETWORKS[name]), cwd=project)
    probabilities = tifffile.imread(output)
    assert probabilities.shape == (30, 512, 512) and probabilities.dtype == np.float32
    assert 0 <= probabilities.min() and probabilities.max() <= 1 and probabilities.std() > 0


def test_missing_dataset_dir_stops_with_one_clear_message(project, tmp_path):
    missing = tmp_path / "no-data"
    result = monai_bundle("run", "training", "--config_file", "bundles/unet/configs/train.json",
                          *tiny("unet", dataset_dir=str(missing)), cwd=project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"ISBI 2012 data not found: {missing} lacks train-volume.tif, train-labels.tif" in output
    assert f"emseg data download isbi2012 --root {missing}" in output


def test_ckpt_export_to_torchscript(trained):
    import torch

    project, name = trained
    traced = torch.jit.load(str(export_bundle(project, name, 64, *overrides(**NETWORKS[name]))))
    assert traced(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)
