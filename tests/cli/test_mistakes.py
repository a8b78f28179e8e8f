"""Bad inputs and mistakes through the real CLIs (``python -m monai.bundle``, ``emseg``) in subprocesses.

For each: the exit code, the last line the user sees (emseg's one-line message naming the file or key), and that
no input or earlier output changed (sha256 of every file before and after).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import copy_bundles
from PIL import Image

from emseg.io.files import sha256

pytestmark = pytest.mark.slow

FEATURES = [4, 4, 8, 8, 8, 4]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the U-Net bundle with a tiny promoted model (weights and the sidecar naming their network)."""
    import torch
    from monai.networks.nets import BasicUNet

    project = copy_bundles(tmp_path_factory.mktemp("project"), ["unet"])
    models = project / "bundles" / "unet" / "models"
    models.mkdir()
    torch.manual_seed(0)
    network = {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
               "features": FEATURES, "norm": "batch"}
    torch.save(BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=FEATURES, norm="batch").state_dict(),
               models / "model.pt")
    (models / "model.json").write_text(json.dumps({"run_name": "handmade", "network": network,
                                                   "weights_sha256": sha256(models / "model.pt")}))
    return project


@pytest.fixture(scope="module")
def stack(isbi_volumes) -> np.ndarray:
    return isbi_volumes[0][:3, :96, :96]


def run_cli(args: list[str], cwd: Path, limit_file_size: int | None = None) -> tuple[int, str]:
    """Exit code and the last non-empty line of stdout and stderr together."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "EMSEG_TRACEBACK")}

    def limit() -> None:  # a full disk, as far as the process can tell: writes past this size fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=600,
                            preexec_fn=limit if limit_file_size else None)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, lines[-1] if lines else ""


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Mistake:
    """A command built in a scratch folder ``work``; ``expect``: a regex for the last line (exit code 1), or None
    for a command that must succeed."""

    name: str
    build: callable
    expect: str | None
    limit_file_size: int | None = None


def inference(project: Path, *args: str) -> list[str]:
    return ["-m", "monai.bundle", "run", "--config_file", str(project / "bundles/unet/configs/inference.json"),
            "--patch_size", "[64,64]", *args]


def training(project: Path, dataset_dir: Path, *args: str) -> list[str]:
    return ["-m", "monai.bundle", "run", "training", "--config_file", str(project / "bundles/unet/configs/train.json"),
            "--dataset_dir", str(dataset_dir), "--download", "False", "--epochs", "1", "--epoch_length", "1",
            "--patch_size", "[64,64]", "--features", json.dumps(FEATURES), *args]


def isbi_copy(work: Path, isbi_dir: Path, label=None, image=None) -> Path:
    """An ISBI-like data folder; ``label``/``image`` replace the volumes (arrays) or files (str: raw bytes)."""
    data = work / "isbi"
    data.mkdir()
    for name, replacement in (("train-volume.tif", image), ("train-labels.tif", label)):
        if replacement is None:
            shutil.copy(isbi_dir / name, data / name)
        elif isinstance(replacement, bytes):
            (data / name).write_bytes(replacement)
        else:
            tifffile.imwrite(data / name, replacement)
    return data


def _in_equals_out(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", stack)
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "in.tif"))


def _through_symlink(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", stack)
    (work / "link.tif").symlink_to(work / "in.tif")
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "link.tif"),
                     "--overwrite", "True")


def _output_inside_input(work, project, stack, isbi_dir):
    (work / "slices").mkdir()
    for i, plane in enumerate(stack):
        Image.fromarray(plane).save(work / "slices" / f"s{i}.png")
    return inference(project, "--input_path", str(work / "slices"), "--output_path", str(work / "slices" / "p.tif"))


def _output_contains_input(work, project, stack, isbi_dir):
    (work / "data").mkdir()
    tifffile.imwrite(work / "data" / "in.tif", stack)
    return inference(project, "--input_path", str(work / "data" / "in.tif"), "--output_path", str(work / "data"),
                     "--output", "mask", "--output_format", "png", "--overwrite", "True")


def _png_onto_a_folder_with_other_files(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", stack)
    (work / "results").mkdir()
    (work / "results" / "notes.txt").write_text("a lab's notes")
    (work / "results" / "slice_0000.png").write_bytes(b"not ours either")
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "results"),
                     "--output", "mask", "--output_format", "png", "--overwrite", "True")


def _existing_output(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", stack)
    tifffile.imwrite(work / "earlier.tif", stack.astype(np.float32))
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "earlier.tif"))


def _overwrite_false_as_text(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", stack)
    tifffile.imwrite(work / "earlier.tif", stack.astype(np.float32))
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "earlier.tif"),
                     "--overwrite", "false")  # MONAI's CLI passes the text "false", which counts as true


def _truncated_tiff(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "full.tif", np.concatenate([stack] * 4), compression="zlib")
    data = (work / "full.tif").read_bytes()
    (work / "full.tif").unlink()
    (work / "cut.tif").write_bytes(data[: int(len(data) * 0.6)])
    return inference(project, "--input_path", str(work / "cut.tif"), "--output_path", str(work / "out.tif"))


def _nan_pixels(work, project, stack, isbi_dir):
    image = stack.astype(np.float32)
    image[1, 10:12, 10:12] = np.nan
    tifffile.imwrite(work / "nan.tif", image)
    return inference(project, "--input_path", str(work / "nan.tif"), "--output_path", str(work / "out.tif"))


def _text_named_tif(work, project, stack, isbi_dir):
    (work / "notes.tif").write_text("this is not an image")
    return inference(project, "--input_path", str(work / "notes.tif"), "--output_path", str(work / "out.tif"))


def _rgb_tiff(work, project, stack, isbi_dir):
    rgb = np.stack([stack[0], stack[0] // 2, stack[0] // 3], axis=-1)
    tifffile.imwrite(work / "rgb.tif", rgb, photometric="rgb")
    return inference(project, "--input_path", str(work / "rgb.tif"), "--output_path", str(work / "out.tif"))


def _sixteen_bit_tiff(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "u16.tif", stack.astype(np.uint16) * 200)
    return inference(project, "--input_path", str(work / "u16.tif"), "--output_path", str(work / "out.tif"))


def _empty_folder(work, project, stack, isbi_dir):
    (work / "empty").mkdir()
    return inference(project, "--input_path", str(work / "empty"), "--output_path", str(work / "out.tif"))


def _overlap_one(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", stack)
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "out.tif"),
                     "--overlap", "1.0")


def _disk_full_keeps_the_earlier_output(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", np.concatenate([stack] * 8))
    tifffile.imwrite(work / "earlier.tif", stack.astype(np.float32))
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "earlier.tif"),
                     "--overwrite", "True")


def _disk_full_nifti(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", np.concatenate([stack] * 8))
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", str(work / "out.nii"),
                     "--output_format", "nifti")


def _unwritable_folder(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "in.tif", stack)
    return inference(project, "--input_path", str(work / "in.tif"), "--output_path", "/sys/fs/emseg/out.tif")


def _missing_dataset(work, project, stack, isbi_dir):
    return training(project, work / "nowhere")


def _too_few_labels(work, project, stack, isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[:27]
    return training(project, isbi_copy(work, isbi_dir, label=labels))


def _corrupt_training_tiff(work, project, stack, isbi_dir):
    return training(project, isbi_copy(work, isbi_dir, image=b"II*\x00garbage"))


def _label_values(work, project, stack, isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif").copy()
    labels[0, :5, :5] = 128
    return training(project, isbi_copy(work, isbi_dir, label=labels))


def _label_size(work, project, stack, isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[:, :256, :256]
    return training(project, isbi_copy(work, isbi_dir, label=labels))


def _patch_too_big(work, project, stack, isbi_dir):
    return training(project, isbi_dir) + ["--patch_size", "[1024,1024]"]


def _unknown_augmentation(work, project, stack, isbi_dir):
    return training(project, isbi_dir, "--augmentation", "wobbly")


def _misspelt_preset_parameter(work, project, stack, isbi_dir):
    return training(project, isbi_dir, "--augmentation_params#intensty", "True")


def _intensity_not_a_bool(work, project, stack, isbi_dir):
    return training(project, isbi_dir, "--augmentation_params#intensity", "maybe")


def _elastic_sigma_not_a_number(work, project, stack, isbi_dir):
    return training(project, isbi_dir, "--augmentation_params#sigma", "five")


def _unknown_loss(work, project, stack, isbi_dir):
    return training(project, isbi_dir, "--loss_name", "dice_cldice")


def _features_wrong_length(work, project, stack, isbi_dir):
    return training(project, isbi_dir) + ["--features", "[8,8]"]


def _preview_unknown_augmentation(work, project, stack, isbi_dir):
    return ["-m", "emseg.cli", "augment", "preview", "--bundle", str(project / "bundles" / "unet"), "--dataset-dir",
            str(isbi_dir), "--augmentation", "wobbly", "--out", str(work / "aug.png")]


def _evaluate_shape_mismatch(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "pred.tif", stack[:2].astype(np.float32) / 255)
    tifffile.imwrite(work / "gt.tif", tifffile.imread(isbi_dir / "train-labels.tif")[:3, :96, :96])
    return ["-m", "emseg.cli", "evaluate", str(work / "pred.tif"), str(work / "gt.tif")]


def _evaluate_onto_an_earlier_report(work, project, stack, isbi_dir):
    tifffile.imwrite(work / "pred.tif", stack.astype(np.float32) / 255)
    tifffile.imwrite(work / "gt.tif", tifffile.imread(isbi_dir / "train-labels.tif")[:3, :96, :96])
    (work / "report").mkdir()
    (work / "report" / "metrics.csv").write_text("slice,v_rand\nan earlier evaluation,0.97\n")
    return ["-m", "emseg.cli", "evaluate", str(work / "pred.tif"), str(work / "gt.tif"), "--output",
            str(work / "report")]


def _preview_onto_an_existing_picture(work, project, stack, isbi_dir):
    Image.fromarray(stack[0]).save(work / "figure.png")
    return ["-m", "emseg.cli", "augment", "preview", "--bundle", str(project / "bundles" / "unet"), "--dataset-dir",
            str(isbi_dir), "--out", str(work / "figure.png")]


def _download_offline(work, project, stack, isbi_dir):
    return ["-m", "emseg.cli", "data", "download", "isbi2012", "--root", str(work / "data" / "isbi2012"),
            "--url", "http://127.0.0.1:9/isbi.h5"]


MISTAKES = [
    Mistake("input is output", _in_equals_out, r"in\.tif: is the input .*in\.tif; write the output to another path"),
    Mistake("output is the input through a symlink", _through_symlink, r"link\.tif: is the input"),
    Mistake("output inside the input folder", _output_inside_input, r"p\.tif: lies inside the input folder"),
    Mistake("output folder contains the input", _output_contains_input, r"data: contains the input"),
    Mistake("PNG output onto a folder with other files", _png_onto_a_folder_with_other_files,
            r"results: holds files emseg did not write; .*choose an empty or new output folder"),
    Mistake("existing output without --overwrite", _existing_output,
            r"earlier\.tif: exists; choose another output path, or set overwrite"),
    Mistake("--overwrite false (text, not a bool)", _overwrite_false_as_text,
            r"overwrite must be True or False, got 'false'; on the command line write --overwrite True or "
            r"--overwrite False"),
    Mistake("truncated compressed TIFF", _truncated_tiff, r"cut\.tif: damaged TIFF, .*truncated or corrupt"),
    Mistake("NaN pixels", _nan_pixels, r"nan\.tif: slice 1 holds 4 NaN or infinite pixel values"),
    Mistake("text file named .tif", _text_named_tif, r"notes\.tif: not a readable TIFF file"),
    Mistake("RGB TIFF", _rgb_tiff, r"rgb\.tif: colour image with 3 channels; EM slices must be greyscale"),
    Mistake("16-bit TIFF is fine", _sixteen_bit_tiff, None),
    Mistake("empty folder", _empty_folder, r"empty: folder holds no image slices"),
    Mistake("overlap 1.0", _overlap_one, r"overlap must be >= 0 and < 1"),
    Mistake("disk full while replacing an output", _disk_full_keeps_the_earlier_output,
            r"earlier\.tif: cannot be written: .*earlier outputs are unchanged", limit_file_size=200_000),
    Mistake("disk full writing NIfTI", _disk_full_nifti, r"out\.nii: cannot be written: the file is larger than",
            limit_file_size=200_000),
    Mistake("output folder that cannot be written", _unwritable_folder,
            r"/sys/fs/emseg/out\.tif: cannot be written: (permission denied|the file system is read-only)"),
    Mistake("missing data set", _missing_dataset, r"ISBI 2012 data not found: .*nowhere lacks train-volume\.tif"),
    Mistake("27 label slices for 30 images", _too_few_labels,
            r"train-labels\.tif: 27 label slices but .*train-volume\.tif has 30 image slices"),
    Mistake("corrupt training TIFF", _corrupt_training_tiff, r"train-volume\.tif: not a readable TIFF file"),
    Mistake("label values outside 0 and 255", _label_values,
            r"train-labels\.tif: a binary label must hold only 0 and 255; found \[128\]"),
    Mistake("labels of another size", _label_size, r"train-labels\.tif: label slices are \(256, 256\)"),
    Mistake("slices smaller than the patch", _patch_too_big,
            r"isbi2012: slice isbi_000 is \(512, 512\), smaller than patch_size \[1024, 1024\]; lower --patch_size"),
    Mistake("unknown augmentation preset", _unknown_augmentation,
            r"unknown augmentation preset 'wobbly'; choose from em, keras, none, unet"),
    Mistake("misspelt augmentation parameter", _misspelt_preset_parameter,
            r"augmentation preset 'unet' has no parameter 'intensty'; it takes grid_points, sigma, prob, intensity "
            r"\(the bundle key augmentation_params passes them"),
    Mistake("intensity that is not a bool", _intensity_not_a_bool,
            r"augmentation_params: intensity must be True or False, got 'maybe'"),
    Mistake("elastic sigma that is not a number", _elastic_sigma_not_a_number,
            r"augmentation_params: sigma must be a number not below 0, got 'five' \(e\.g\. --augmentation_params#sigma 10"),
    Mistake("unknown loss", _unknown_loss, r"unknown loss 'dice_cldice'; choose from bce_jaccard, border_ce, ce, "
            r"dice, dice_ce, dice_ce_cldice \(the bundle key loss_name chooses it"),
    Mistake("features of the wrong length", _features_wrong_length, r"BasicUNet.*features.*length|length.*features"),
    Mistake("augment preview with an unknown preset", _preview_unknown_augmentation,
            r"unknown augmentation preset 'wobbly'"),
    Mistake("evaluate with a shorter prediction", _evaluate_shape_mismatch,
            r"pred\.tif: shape \(2, 96, 96\) differs from .*gt\.tif \(3, 96, 96\)"),
    Mistake("download with no network", _download_offline, r"cannot download http://127\.0\.0\.1:9/isbi\.h5"),
    Mistake("evaluate onto an earlier report", _evaluate_onto_an_earlier_report,
            r"report/metrics\.csv: exists; choose another output, or pass --overwrite"),
    Mistake("preview onto an existing picture", _preview_onto_an_existing_picture,
            r"figure\.png: exists; choose another output, or pass --overwrite"),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_mistake(mistake, project, stack, isbi_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    args = mistake.build(work, project, stack, isbi_dir)
    protected = {"work": digests(work), "data": digests(isbi_dir), "bundle": digests(project / "bundles" / "unet")}
    code, last = run_cli(args, cwd=tmp_path, limit_file_size=mistake.limit_file_size)
    if mistake.expect is None:
        assert code == 0, last
    else:
        assert code == 1, last
        assert last.startswith("emseg: error: ") and re.search(mistake.expect, last), last
    after = {"work": digests(work), "data": digests(isbi_dir), "bundle": digests(project / "bundles" / "unet")}
    written = {k: v for k, v in after["work"].items() if k not in protected["work"]}
    assert {k: after["work"][k] for k in protected["work"]} == protected["work"]  # no input or earlier output changed
    assert after["data"] == protected["data"] and after["bundle"] == protected["bundle"]
    assert not [k for k in written if k.endswith(".part")]  # nothing half-written left behind
    if mistake.expect is not None:
        assert written == {}, f"a failed command left {sorted(written)}"
    assert not (work / "data").exists() or any((work / "data").iterdir())  # no empty folder left by a download


def test_evaluate_reads_masks_as_masks(tmp_path, isbi_volumes):
    """emseg's own 0/1 mask output, and a 0/255 mask, score as perfect against the labels they came from."""
    labels = isbi_volumes[1][25:27]
    tifffile.imwrite(tmp_path / "gt.tif", labels)
    for name, mask in (("m01.tif", (labels > 0).astype(np.uint8)), ("m255.tif", labels)):
        tifffile.imwrite(tmp_path / name, mask)
        result = subprocess.run([sys.executable, "-m", "emseg.cli", "evaluate", str(tmp_path / name),
                                 str(tmp_path / "gt.tif"), "--output", str(tmp_path / name[:-4])],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert f"{name}: read as a mask" in result.stdout
        summary = json.loads((tmp_path / name[:-4] / "summary.json").read_text())
        for key in ("v_rand", "v_info", "accuracy", "dice_membrane", "dice_interior", "mean_dice"):
            assert summary[key] == pytest.approx(1.0), key
        assert summary["pixel_error"] == 0.0 and summary["hd95_membrane"] == 0.0


def test_traceback_is_kept_out_of_the_way(project, tmp_path):
    code, last = run_cli(inference(project, "--input_path", str(tmp_path / "missing.tif"), "--output_path",
                                   str(tmp_path / "out.tif")), cwd=tmp_path)
    assert code == 1 and last == f"emseg: error: {tmp_path / 'missing.tif'}: no such file or folder"
    env = {**os.environ, "EMSEG_TRACEBACK": "1"}
    result = subprocess.run([sys.executable, *inference(project, "--input_path", str(tmp_path / "missing.tif"),
                                                        "--output_path", str(tmp_path / "out.tif"))],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == last


def test_a_refused_file_command_loads_neither_torch_nor_monai(tmp_path):
    """The emseg command builds its parser and refuses a missing input without importing torch or MONAI, so a
    mistake is answered in well under a second instead of the seconds those imports take."""
    script = ("import sys\nfrom emseg.cli import main\ncode = main(sys.argv[1:])\n"
              "print('loaded:', sorted(m for m in ('torch', 'monai', 'mlflow') if m in sys.modules))\n"
              "sys.exit(code)")
    code, last = run_cli(["-c", script, "data", "to-zarr", str(tmp_path / "missing.tif"), str(tmp_path / "a.zarr")],
                         cwd=tmp_path)
    assert code == 1 and last == "loaded: []"
    assert not (tmp_path / "a.zarr").exists()
