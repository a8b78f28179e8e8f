"""Packed bundles: layout, checksums, verification, and inference with MONAI alone in a fresh venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REPO_ROOT, copy_bundles, monai_bundle, overrides, train_bundle

from emseg.bundle.pack import BundleError, pack_bundle, verify_bundle

pytestmark = pytest.mark.slow

FEATURES = "[8,8,16,32,64,8]"


@pytest.fixture(scope="module")
def trained_unet(tmp_path_factory, isbi_dir) -> Path:
    """A temporary project with a copy of the U-Net bundle, trained tiny."""
    project = copy_bundles(tmp_path_factory.mktemp("project"), ["unet"])
    train_bundle(project, "unet", overrides(dataset_dir=str(isbi_dir), epochs="1", epoch_length="2", val_interval="1",
                                            batch_size="2", crops_per_slice="2", patch_size="[64,64]",
                                            features=FEATURES, download="False"), cwd=project)
    return project


@pytest.fixture(scope="module")
def packed(trained_unet, tmp_path_factory) -> Path:
    """The promoted tiny U-Net packed before any evaluation (no widths given: they are saved with the weights)."""
    return pack_bundle(trained_unet / "bundles" / "unet", tmp_path_factory.mktemp("packed"))


def test_pack_has_the_bundle_layout_and_checksums(packed):
    version = json.loads((REPO_ROOT / "bundles/unet/configs/metadata.json").read_text())["version"]
    assert packed.name == f"unet_v{version}.zip"
    names = set(zipfile.ZipFile(packed).namelist())
    assert {"unet/configs/metadata.json", "unet/configs/inference.json", "unet/configs/train.json", "unet/LICENSE",
            "unet/docs/README.md", "unet/models/model.pt", "unet/models/model.ts", "unet/large_files.json"} <= names
    inference = json.loads(zipfile.ZipFile(packed).read("unet/configs/inference.json"))
    assert not any("emseg" in json.dumps(v) for v in inference.values())  # MONAI, torch and tifffile only
    saved = json.loads(zipfile.ZipFile(packed).read("unet/models/model.json"))  # the network travels with the weights
    assert saved["network"]["features"] == json.loads(FEATURES)
    assert verify_bundle(packed)["version"] == version


def test_an_unevaluated_model_is_packed_without_scores(packed, trained_unet):
    meta = json.loads(zipfile.ZipFile(packed).read("unet/configs/metadata.json"))
    assert "eval_metrics" not in meta  # not the scores in the repository's metadata.json, which are another model's
    sidecar = json.loads((trained_unet / "bundles" / "unet" / "models" / "model.json").read_text())
    provenance = meta["emseg_provenance"]
    assert provenance["evaluation"] == "not evaluated" and provenance["run_name"] == sidecar["run_name"]
    assert provenance["mlflow_run_id"] == sidecar["mlflow_run_id"] and provenance["dataset"] == "isbi2012"
    assert provenance["weights_sha256"] == sidecar["weights_sha256"]


def test_an_evaluated_model_is_packed_with_its_own_scores(trained_unet, isbi_dir, tmp_path):
    bundle = trained_unet / "bundles" / "unet"
    monai_bundle("run", "--config_file", "['bundles/unet/configs/train.json','bundles/unet/configs/evaluate.json']",
                 *overrides(dataset_dir=str(isbi_dir), download="False"), cwd=trained_unet)
    (summary,) = bundle.glob("eval/*/summary.json")
    scores = json.loads(summary.read_text())
    zip_path = pack_bundle(bundle, tmp_path)
    meta = json.loads(zipfile.ZipFile(zip_path).read("unet/configs/metadata.json"))
    assert meta["eval_metrics"]["test_v_rand"] == pytest.approx(scores["v_rand"])
    assert meta["eval_metrics"]["test_dice_membrane"] == pytest.approx(scores["dice_membrane"])
    assert meta["emseg_provenance"]["evaluation"] == summary.parent.name
    assert meta["emseg_provenance"]["eval_slices"] == [f"isbi_{i:03d}" for i in range(25, 30)]


def rewritten(packed: Path, folder: Path, member: str, change) -> Path:
    """A copy of the zip ``packed`` in ``folder`` with ``change`` applied to the bytes of ``member``."""
    copy = folder / packed.name
    with zipfile.ZipFile(packed) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, change(data) if item.filename == member else data)
    return copy


def test_verify_fails_on_a_tampered_weight_file(packed, tmp_path):
    tampered = rewritten(packed, tmp_path, "unet/models/model.pt", lambda data: data[:-8] + bytes(8))
    with pytest.raises(BundleError, match="unet/models/model.pt has sha256 .* the file was changed"):
        verify_bundle(tampered)


def test_verify_fails_when_metadata_lies_about_the_network(packed, tmp_path):
    def three_channels(data: bytes) -> bytes:
        meta = json.loads(data)
        meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
        return json.dumps(meta).encode()

    changed = rewritten(packed, tmp_path, "unet/configs/metadata.json", three_channels)
    with pytest.raises(BundleError, match="metadata.json says 3 channels"):
        verify_bundle(changed)


def test_cli_pack_and_verify(trained_unet, tmp_path):
    from emseg.cli import main

    assert main(["bundle", "pack", str(trained_unet / "bundles" / "unet"), "--output", str(tmp_path)]) == 0
    (zip_path,) = tmp_path.glob("unet_v*.zip")
    assert main(["bundle", "verify", str(zip_path)]) == 0
    assert main(["bundle", "verify", str(tmp_path / "missing.zip")]) == 1


@pytest.mark.venv
def test_packed_bundle_runs_with_monai_alone(packed, trained_unet, isbi_dir, tmp_path):
    """Unzip, make a venv with only monai (and fire, for its CLI), torch and tifffile, run the packed inference;
    compare with emseg's own inference."""
    with zipfile.ZipFile(packed) as archive:
        archive.extractall(tmp_path)
    slices = tmp_path / "slices.tif"
    tifffile.imwrite(slices, tifffile.imread(isbi_dir / "test-volume.tif")[:3])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0", "monai[fire]", "tifffile"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    run = subprocess.run([str(python), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                          "--input_path", str(slices), "--output_path", str(tmp_path / "packed.tif")],
                         cwd=tmp_path / "unet", env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    probe = subprocess.run([str(python), "-c", "import emseg"], cwd=tmp_path, capture_output=True, env=env)
    assert probe.returncode != 0  # the venv really has no emseg
    monai_bundle("run", "--config_file", "bundles/unet/configs/inference.json", "--amp", "False",
                 "--channels_last", "False", *overrides(input_path=str(slices), output_path=str(tmp_path / "repo.tif")),
                 cwd=trained_unet)
    packed_output, repo_output = tifffile.imread(tmp_path / "packed.tif"), tifffile.imread(tmp_path / "repo.tif")
    assert packed_output.shape == (3, 512, 512) and packed_output.dtype == np.float32
    np.testing.assert_allclose(packed_output, repo_output, atol=1e-4)
