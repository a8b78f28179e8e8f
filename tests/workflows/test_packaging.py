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
from conftest import (
    REPO_ROOT,
    config,
    copy_bundles,
    mlflow_runs,
    monai_bundle,
    overrides,
    tiny_unet_copy,
)

from emseg.bundle.pack import BundleError, evaluation_of, pack_bundle, provenance, verify_bundle
from emseg.engine.registry import mlflow_store
from emseg.evaluation.challenge import SCORER
from emseg.io import tiff_spacing
from emseg.networks import final_output

pytestmark = pytest.mark.slow

FEATURES = "[8,8,16,32,64,8]"


@pytest.fixture(scope="module")
def trained_unet(tiny_unet, tmp_path_factory) -> Path:
    """A copy of the session's tiny trained U-Net project."""
    return tiny_unet_copy(tiny_unet, tmp_path_factory.mktemp("project"))


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
    result = verify_bundle(packed)
    assert result["metadata"]["version"] == version and result["origin"].startswith("integrity only")
    assert result["unlisted_code"] == []


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
    assert meta["emseg_provenance"]["eval_tta_transforms"] == [[0, False]]
    assert json.loads((summary.parent / "evaluation.json").read_text())["tta_transforms"] == [[0, False]]
    assert meta["emseg_provenance"]["eval_scorer"] == SCORER  # the challenge's procedure, as Fiji computes it
    assert meta["emseg_provenance"]["eval_thresholds"]["v_rand_threshold"] == scores["v_rand_threshold"]
    assert not [key for key in meta["eval_metrics"] if "threshold" in key]


def test_v_rand_of_an_evaluation_before_the_challenge_scorer_is_not_packed(tmp_path):
    """An evaluation.json without the scorer's name scored V_rand with emseg's earlier probability-guided
    thinning: those numbers are not the challenge's and stay out of eval_metrics, with a note saying so."""
    folder = tmp_path / "eval" / "old"
    folder.mkdir(parents=True)
    (folder / "evaluation.json").write_text(json.dumps({
        "evaluation": "old", "weights": {"sha256": "a"}, "eval_split": "test", "tta_transforms": [[0, False]],
        "scores": {"v_rand": 0.9878, "v_rand_split": 0.99, "v_info": 0.9887, "dice_membrane": 0.81,
                   "v_rand_threshold": 0.9}}))
    metrics, origin = provenance(tmp_path, "a", {})
    assert metrics == {"test_dice_membrane": 0.81} and "eval_scorer" not in origin
    assert "evaluate the weights again" in origin["eval_note"]


def test_the_scores_packed_are_those_on_test_slices_without_test_time_augmentation(tmp_path):
    """A packed or exported model runs without TTA: its scores come from an evaluation without it, even when an
    evaluation with TTA is newer; with none such, the newest evaluation of those weights. An evaluation on the
    test split goes before a newer one on the validation split (whose slices chose the weights)."""
    def evaluation(name: str, digest: str, tta: list, age: int, split: str = "test") -> None:
        folder = tmp_path / "eval" / name
        folder.mkdir(parents=True)
        (folder / "evaluation.json").write_text(json.dumps({"evaluation": name, "weights": {"sha256": digest},
                                                            "eval_split": split, "tta_transforms": tta,
                                                            "scores": {}}))
        os.utime(folder / "evaluation.json", (1e9 + age, 1e9 + age))

    evaluation("plain", "a", [[0, False]], age=1)
    evaluation("tta", "a", [[k, f] for f in (False, True) for k in range(4)], age=2)
    evaluation("other-weights", "b", [[0, False]], age=3)
    assert evaluation_of(tmp_path, "a")["evaluation"] == "plain"
    evaluation("tta-only", "c", [[0, False], [2, True]], age=4)
    evaluation("older-tta", "c", [[1, False]], age=0)
    assert evaluation_of(tmp_path, "c")["evaluation"] == "tta-only"
    assert evaluation_of(tmp_path, "d") is None
    evaluation("test-tta", "e", [[1, False]], age=1)
    evaluation("validation-plain", "e", [[0, False]], age=5, split="validation")
    assert evaluation_of(tmp_path, "e")["evaluation"] == "test-tta"
    evaluation("validation-only", "f", [[0, False]], age=1, split="validation")
    assert evaluation_of(tmp_path, "f")["evaluation"] == "validation-only"


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


def test_verify_checks_the_published_digest(packed, tmp_path):
    from emseg.io.files import sha256

    digest = sha256(packed)
    assert verify_bundle(packed, digest)["origin"] == "the zip's sha256 matches the one published by the sender"
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  {packed.name}\n")
    assert verify_bundle(packed, str(tmp_path / "SHA256SUMS"))["origin"].startswith("the zip's sha256 matches")
    with pytest.raises(BundleError, match="is not the 0+ published by the sender"):
        verify_bundle(packed, "0" * 64)


def test_verify_refuses_weights_swapped_with_their_checksum(packed, tmp_path):
    """A model.pt changed together with its sha256 in large_files.json passes the checksums inside the zip, but not
    the comparison with model.ts, nor the sender's digest."""
    import io

    import torch

    from emseg.io.files import sha256

    with zipfile.ZipFile(packed) as archive:
        state = torch.load(io.BytesIO(archive.read("unet/models/model.pt")), weights_only=True)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    swapped = rewritten(packed, tmp_path, "unet/models/model.pt", lambda data: buffer.getvalue())
    (tmp_path / "x").mkdir()
    new_hash = __import__("hashlib").sha256(buffer.getvalue()).hexdigest()
    both = rewritten(swapped, tmp_path / "x", "unet/large_files.json", lambda data: json.dumps({"large_files": [
        {**e, "hash_val": new_hash} if e["path"] == "models/model.pt" else e
        for e in json.loads(data)["large_files"]]}).encode())
    with pytest.raises(BundleError, match="model.pt and models/model.ts hold different weights"):
        verify_bundle(both)
    with pytest.raises(BundleError, match="not the .* published by the sender"):
        verify_bundle(both, sha256(packed))


@pytest.mark.parametrize(("member", "change", "message"), [
    ("unet/large_files.json", lambda data: b'{"large_files": []}', "does not list models/model.pt, models/model.ts"),
    ("unet/large_files.json", lambda data: json.dumps({"large_files": [
        {"path": "/dev/zero", "hash_val": "0"}, *json.loads(data)["large_files"]]}).encode(), "outside the bundle"),
    ("unet/large_files.json", lambda data: json.dumps({"large_files": [
        {"path": "../../etc/passwd", "hash_val": "0"}, *json.loads(data)["large_files"]]}).encode(),
     "outside the bundle"),
    ("unet/configs/inference.json", lambda data: json.dumps({**json.loads(data), "initialize": [
        "$__import__('os').system('touch /tmp/emseg-owned')"]}).encode(), "off the allow list.*uses __import__"),
])
def test_verify_refusals(packed, tmp_path, member, change, message):
    with pytest.raises(BundleError, match=message):
        verify_bundle(rewritten(packed, tmp_path, member, change))


def test_verify_lists_code_it_accepts_on_request(packed, tmp_path):
    changed = rewritten(packed, tmp_path, "unet/configs/inference.json", lambda data: json.dumps(
        {**json.loads(data), "extra": "$os.system('true')"}).encode())
    result = verify_bundle(changed, allow_code=True)
    assert result["unlisted_code"] == ["inference.json: extra: $os.system('true') (uses os.system)"]


def test_verify_refuses_members_outside_the_bundle(packed, tmp_path):
    evil = tmp_path / packed.name
    with zipfile.ZipFile(packed) as source, zipfile.ZipFile(evil, "w") as target:
        for item in source.infolist():
            target.writestr(item, source.read(item))
        target.writestr("unet/../../escaped.txt", b"x")
    with pytest.raises(BundleError, match="member unet/../../escaped.txt points outside the bundle"):
        verify_bundle(evil)


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
                 "--channels_last", "False", "--whole_slice_pixels", "0", *overrides(input_path=str(slices), output_path=str(tmp_path / "repo.tif")),
                 cwd=trained_unet)
    packed_output, repo_output = tifffile.imread(tmp_path / "packed.tif"), tifffile.imread(tmp_path / "repo.tif")
    assert packed_output.shape == (3, 512, 512) and packed_output.dtype == np.float32
    np.testing.assert_allclose(packed_output, repo_output, atol=1e-4)
    assert tiff_spacing(tmp_path / "packed.tif") == tiff_spacing(tmp_path / "repo.tif") == pytest.approx(
        (0.05, 0.004, 0.004))  # the two paths write the same ImageJ metadata


def _emseg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emseg.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_bioimageio_package_validates_and_passes_the_core_test(trained_unet, isbi_dir, tmp_path):
    """The export of a tiny trained U-Net: bioimageio.spec validates it, bioimageio.core's model test passes (both
    weight formats reproduce the test output and run at other sizes), and it says which run made it."""
    import yaml

    from emseg.bundle.bioimageio import validate_package

    bundle = trained_unet / "bundles" / "unet"
    package = tmp_path / "unet.bioimageio.zip"
    done = _emseg("bundle", "export-bioimageio", str(bundle), str(package), "--dataset-dir", str(isbi_dir), "--test",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed bioimageio.core's model test" in done.stdout
    assert validate_package(package) in ("valid-format", "passed")
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        test_input = np.load(archive.open("test_input.npy"))
        assert {"cover.png", "README.md", "weights.pt", "weights.torchscript.pt"} <= set(archive.namelist())
    sidecar = json.loads((bundle / "models" / "model.json").read_text())
    assert rdf["config"]["emseg"]["run_name"] == sidecar["run_name"]
    assert rdf["config"]["emseg"]["weights_sha256"] == sidecar["weights_sha256"]
    assert rdf["config"]["emseg"]["model_version"] == sidecar["model_version"]  # the MLflow registry's version
    assert [axis.get("scale") for axis in rdf["inputs"][0]["axes"][2:]] == [0.004, 0.004]  # micrometres per pixel
    assert [c["doi"] for c in rdf["cite"] if "doi" in c][:1] == ["10.1007/978-3-319-24574-4_28"]
    first = tifffile.imread(isbi_dir / "test-volume.tif", key=0)
    np.testing.assert_array_equal(test_input[0, 0], first[128:384, 128:384])  # a real slice, centre crop


def test_bioimageio_export_refuses_bad_requests(trained_unet, isbi_dir, tmp_path):
    bundle = trained_unet / "bundles" / "unet"
    existing = tmp_path / "taken.zip"
    existing.write_bytes(b"someone's file")
    untrained = copy_bundles(tmp_path / "untrained", ["unet"]) / "bundles" / "unet"
    for args, message in (
        ([str(bundle), str(existing)], "taken.zip: exists; choose another name or pass --overwrite"),
        ([str(bundle), str(tmp_path / "model.yaml")], "model.yaml: a bioimage.io package is a .zip"),
        ([str(untrained), str(tmp_path / "u.zip")], "models/model.pt: missing, cannot export"),
        ([str(bundle), str(tmp_path / "u.zip"), "--image", str(tmp_path / "none.tif")], "none.tif: no such file"),
    ):
        done = _emseg("bundle", "export-bioimageio", *args, "--dataset-dir", str(isbi_dir), cwd=tmp_path)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode != 0 and message in last, done.stderr
    assert existing.read_bytes() == b"someone's file" and not (tmp_path / "u.zip").exists()


def test_promoted_model_is_a_registered_version_that_predicts_like_the_bundle(trained_unet, isbi_dir, tmp_path):
    """The registry's version names its run and score, and the model it loads gives the bundle's probabilities."""
    import mlflow
    import torch
    from monai.transforms import NormalizeIntensity

    project, name = trained_unet, "unet"
    sidecar = json.loads((project / "bundles" / name / "models" / "model.json").read_text())
    client, _ = mlflow_runs(project, f"emseg-{name}")
    version = client.get_model_version(f"emseg-{name}", sidecar["model_version"])
    assert version.run_id == sidecar["mlflow_run_id"] and version.tags["emseg.run_name"] == sidecar["run_name"]
    assert float(version.tags["emseg.value"]) == pytest.approx(sidecar["value"])
    assert version.tags["emseg.weights_sha256"] == sidecar["weights_sha256"]
    with mlflow_store(client.tracking_uri):  # MLflow's fluent API, without changing this process's store
        model = mlflow.pytorch.load_model(f"models:/emseg-{name}/{sidecar['model_version']}")
        info = mlflow.models.get_model_info(f"models:/emseg-{name}/{sidecar['model_version']}")
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 1, -1, -1)
    patch = tifffile.imread(isbi_dir / "test-volume.tif", key=0)[:64, :64]
    tifffile.imwrite(tmp_path / "patch.tif", patch)
    monai_bundle("run", "--config_file", config(project, name, "inference.json"), "--amp", "False",
                 "--channels_last", "False", *overrides(input_path=str(tmp_path / "patch.tif"),
                                                        output_path=str(tmp_path / "bundle.tif")), cwd=tmp_path)
    x = NormalizeIntensity()(torch.as_tensor(patch, dtype=torch.float32)[None])[None]
    with torch.inference_mode():
        logits = model.eval()(x)
    registry = torch.softmax(final_output(logits), dim=1)[0, 1].numpy()
    np.testing.assert_allclose(registry, tifffile.imread(tmp_path / "bundle.tif"), atol=1e-5)
