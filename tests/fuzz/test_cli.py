"""Fuzzed inputs through the real CLIs in subprocesses: ``emseg data to-zarr``, ``emseg evaluate`` (labels that
disagree with the prediction included), and, in the slow lane, a bundle's inference and training. Each case ends in
exit 0 with a correct output, or in a non-zero exit whose last line is one ``emseg: error:`` naming the file, with
nothing written (no output, no ``.part`` leftovers), within a time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

from emseg.io import VolumeError, read_volume

from .conftest import few
from .damage import KINDS, SPARSE, apply, damages, volumes, write

LIMIT = 120  # seconds a command may take, its start (torch, MONAI imports) included


def run(args: list[str], work: Path) -> tuple[int, str, float]:
    """Exit code, last non-empty line of stderr and stdout together, and seconds taken, of a command run beside
    ``work`` (so what it writes to its working folder, MLflow's store, is not counted as written into ``work``);
    tracebacks go to a scratch folder there too."""
    cwd = work.parent
    scratch = cwd / "tmp"
    scratch.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "EMSEG_TRACEBACK")}
    env["TMPDIR"] = str(scratch)
    start = time.monotonic()
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=LIMIT)
    seconds = time.monotonic() - start
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    note(f"exit {result.returncode} in {seconds:.1f} s: {lines[-1] if lines else ''}")
    return result.returncode, lines[-1] if lines else "", seconds


def reads_as(path: Path) -> np.ndarray | None:
    """What the in-process reader makes of ``path``: the volume, or None where it refuses it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_volume(path)
    except VolumeError:
        return None


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def check_refusal(code: int, last: str, names: list[Path]) -> None:
    assert code == 1, last
    assert last.startswith("emseg: error: "), last
    assert any(str(name) in last for name in names), f"names none of {names}: {last}"


@given(data=st.data())
@settings(max_examples=few(), deadline=None)  # bounded by LIMIT
def test_to_zarr(data):
    kind = data.draw(st.sampled_from(sorted(KINDS)), label="kind")
    volume = data.draw(volumes(kind))
    damage = data.draw(st.one_of(st.none(), damages(kind in SPARSE)), label="damage")
    with tempfile.TemporaryDirectory() as root:
        work = Path(root) / "work"
        work.mkdir()
        stack = write(kind, volume, work)
        if damage is not None:
            assume(apply(damage, stack) is not None)
        expected = reads_as(stack)
        before = listing(work)
        out = work / "out.zarr"
        code, last, seconds = run(["-m", "emseg.cli", "data", "to-zarr", str(stack), str(out), "--levels", "1"],
                                  work)
        if code == 0:
            assert expected is not None, f"{stack}: converted, but the reader refuses it"
            np.testing.assert_array_equal(read_volume(out), expected)
            assert listing(work) - before == {str(p.relative_to(work)) for p in [out, *out.rglob("*")]}
        else:
            check_refusal(code, last, [stack, out])
            assert listing(work) == before, f"left {sorted(listing(work) - before)}"


@st.composite
def evaluations(draw):
    """(prediction, labels, damage): cell-interior probabilities and 0/255 labels of the same or another shape."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    count, side = draw(st.integers(1, 3)), draw(st.integers(8, 24))
    labels = np.where(rng.random((count, side, side)) > 0.3, 255, 0).astype(np.uint8)
    shape = draw(st.sampled_from([labels.shape, labels.shape, (count + 1, side, side), (count, side, side + 1)]))
    prediction = rng.random(shape).astype(np.float32)
    damage = draw(st.one_of(st.none(), st.tuples(st.sampled_from(["pred.tif", "gt.tif"]), damages())))
    return prediction, labels, damage


@given(case=evaluations())
@settings(max_examples=few(), deadline=None)  # bounded by LIMIT
def test_evaluate(case):
    prediction, labels, damage = case
    with tempfile.TemporaryDirectory() as root:
        work = Path(root) / "work"
        work.mkdir()
        pred, gt, report = work / "pred.tif", work / "gt.tif", work / "report"
        tifffile.imwrite(pred, prediction, photometric="minisblack")
        tifffile.imwrite(gt, labels, photometric="minisblack")
        if damage is not None:
            assume(apply(damage[1], work / damage[0]) is not None)
        before = listing(work)
        code, last, seconds = run(["-m", "emseg.cli", "evaluate", str(pred), str(gt), "--output", str(report)], work)
        read_pred, read_gt = reads_as(pred), reads_as(gt)
        if code == 0:
            assert read_pred is not None and read_gt is not None and read_pred.shape == read_gt.shape
            summary = json.loads((report / "summary.json").read_text())
            assert 0.0 <= summary["pixel_error"] <= 1.0
            if damage is None:
                assert prediction.shape == labels.shape
        else:
            check_refusal(code, last, [pred, gt])
            assert listing(work) == before, f"left {sorted(listing(work) - before)}"
            assert not (damage is None and prediction.shape == labels.shape), last


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the U-Net bundle with a tiny, untrained promoted model (as tests/cli/test_mistakes.py builds)."""
    import torch
    from conftest import copy_bundles
    from monai.networks.nets import BasicUNet

    from emseg.io.files import sha256

    features = [4, 4, 8, 8, 8, 4]
    project = copy_bundles(tmp_path_factory.mktemp("project"), ["unet"])
    models = project / "bundles" / "unet" / "models"
    models.mkdir()
    torch.manual_seed(0)
    network = {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": features,
               "norm": "batch"}
    torch.save(BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=features, norm="batch").state_dict(),
               models / "model.pt")
    (models / "model.json").write_text(json.dumps({"run_name": "handmade", "network": network,
                                                   "weights_sha256": sha256(models / "model.pt")}))
    return project


INFERENCE_KINDS = ["tiff", "tiff_zlib", "png", "folder", "nifti", "nifti_gz", "ome_zarr"]


@pytest.mark.slow
@given(data=st.data())
@settings(max_examples=few(), deadline=None)  # bounded by LIMIT
def test_inference(project, data):
    kind = data.draw(st.sampled_from(INFERENCE_KINDS), label="kind")
    volume = data.draw(volumes(kind, max_side=40, max_slices=2))
    damage = data.draw(st.one_of(st.none(), damages(kind in SPARSE)), label="damage")
    with tempfile.TemporaryDirectory() as root:
        work = Path(root) / "work"
        work.mkdir()
        stack = write(kind, volume, work)
        if damage is not None:
            assume(apply(damage, stack) is not None)
        expected = reads_as(stack)
        before = listing(work)
        out = work / "probs.tif"
        code, last, seconds = run(["-m", "monai.bundle", "run", "--config_file",
                                   str(project / "bundles/unet/configs/inference.json"), "--patch_size", "[32,32]",
                                   "--input_path", str(stack), "--output_path", str(out)], work)
        if code == 0:
            assert expected is not None, f"{stack}: segmented, but the reader refuses it"
            probabilities = tifffile.imread(out).reshape(expected.shape)
            assert probabilities.dtype == np.float32 and np.isfinite(probabilities).all()
            assert listing(work) - before == {"probs.tif"}
        else:
            check_refusal(code, last, [stack, out])
            assert listing(work) == before, f"left {sorted(listing(work) - before)}"


@pytest.mark.slow
@given(data=st.data())
@settings(max_examples=few(), deadline=None)  # bounded by LIMIT
def test_training(project, data):
    from .test_training_data import SIDE, SLICES, datasets

    image, label = data.draw(datasets())
    damage = data.draw(st.one_of(st.none(), st.tuples(st.sampled_from(["train-volume.tif", "train-labels.tif"]),
                                                      damages())), label="damage")
    with tempfile.TemporaryDirectory() as root:
        work = Path(root) / "work"
        (work / "isbi").mkdir(parents=True)
        tifffile.imwrite(work / "isbi" / "train-volume.tif", np.tile(image, (1, 4, 4)), photometric="minisblack")
        tifffile.imwrite(work / "isbi" / "train-labels.tif", np.tile(label, (1, 4, 4)), photometric="minisblack")
        if damage is not None:
            assume(apply(damage[1], work / "isbi" / damage[0]) is not None)
        before = listing(work)
        code, last, seconds = run(["-m", "monai.bundle", "run", "training", "--config_file",
                                   str(project / "bundles/unet/configs/train.json"), "--dataset_dir",
                                   str(work / "isbi"), "--download", "False", "--epochs", "1", "--epoch_length", "1",
                                   "--patch_size", "[32,32]", "--features", "[4,4,8,8,8,4]", "--register_model",
                                   "False"], work)
        if code != 0:
            check_refusal(code, last, [work / "isbi" / "train-volume.tif", work / "isbi" / "train-labels.tif"])
            assert listing(work) == before, f"left {sorted(listing(work) - before)}"
        else:
            assert damage is not None or (label.shape == (SLICES, SIDE, SIDE)), last
