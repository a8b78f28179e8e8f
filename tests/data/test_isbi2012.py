"""The ISBI 2012 data set definition: split, label convention and bad-input errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from emseg.data import DatasetNotFoundError
from emseg.data.isbi2012 import (
    DEFAULT_SPLIT,
    IMAGE_FILE,
    LABEL_FILE,
    isbi2012_datalist,
    load_isbi2012,
)
from emseg.data.splits import check_split
from emseg.io import VolumeError


def test_default_split_items(isbi_dir, isbi_volumes):
    parts = {part: isbi2012_datalist(isbi_dir, part, download=False) for part in DEFAULT_SPLIT}
    assert {k: [item["index"] for item in v] for k, v in parts.items()} == DEFAULT_SPLIT
    item = parts["test"][0]
    assert item["image"].shape == (1, 512, 512) and item["image"].dtype == np.float32
    np.testing.assert_array_equal(item["image"][0], isbi_volumes[0][25])
    # 1 = cell interior (ISBI value 255), 0 = membrane
    np.testing.assert_array_equal(item["label"][0], (isbi_volumes[1][25] == 255).astype(np.float32))
    assert item["name"] == "isbi_025"


def test_test_slices_never_in_training_or_validation():
    seen = [i for part in ("train", "validation") for i in DEFAULT_SPLIT[part]]
    assert not set(seen) & set(DEFAULT_SPLIT["test"])


def test_custom_split(isbi_dir):
    split = {"train": [0, 1], "validation": [2], "test": [29]}
    assert [item["index"] for item in isbi2012_datalist(isbi_dir, "train", split, download=False)] == [0, 1]


def test_overlapping_or_out_of_range_split_is_refused():
    with pytest.raises(ValueError, match="slice 3 is in both 'train' and 'test'"):
        check_split({"train": [1, 3], "test": [3]}, 30, "v.tif")
    with pytest.raises(ValueError, match="names slice 30 but v.tif has 30 slices"):
        check_split({"test": [30]}, 30, "v.tif")


def test_missing_dataset_dir_message(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_isbi2012(missing, download=False)
    message = str(info.value)
    assert str(missing) in message and IMAGE_FILE in message and LABEL_FILE in message
    assert f"emseg data download isbi2012 --root {missing}" in message


def test_offline_download_failure_message(tmp_path):
    from emseg.data.isbi2012 import ensure_isbi2012

    with pytest.raises(DatasetNotFoundError, match="lacks train-volume.tif, train-labels.tif.*download failed"):
        ensure_isbi2012(tmp_path, download=True, url="http://127.0.0.1:9/isbi.h5")  # port 9: nothing listens


def _copy_with_labels(tmp_path, isbi_dir, labels):
    shutil.copy(isbi_dir / IMAGE_FILE, tmp_path / IMAGE_FILE)
    tifffile.imwrite(tmp_path / LABEL_FILE, labels)
    return tmp_path


def test_label_slice_count_mismatch_names_file(tmp_path, isbi_dir, isbi_volumes):
    folder = _copy_with_labels(tmp_path, isbi_dir, isbi_volumes[1][:29])
    with pytest.raises(VolumeError, match=f"{LABEL_FILE}: 29 label slices but .*{IMAGE_FILE} has 30"):
        load_isbi2012(folder, download=False)


def test_label_size_mismatch_names_file(tmp_path, isbi_dir, isbi_volumes):
    folder = _copy_with_labels(tmp_path, isbi_dir, isbi_volumes[1][:, :256, :])
    with pytest.raises(VolumeError, match=rf"{LABEL_FILE}: label slices are \(256, 512\)"):
        load_isbi2012(folder, download=False)


def test_non_binary_label_names_file(tmp_path, isbi_dir, isbi_volumes):
    labels = isbi_volumes[1].copy()
    labels[0, 0, 0] = 17
    folder = _copy_with_labels(tmp_path, isbi_dir, labels)
    with pytest.raises(VolumeError, match=f"{LABEL_FILE}: a binary label must hold only 0 and 255; found \\[17\\]"):
        load_isbi2012(folder, download=False)


def test_non_tiff_label_file_names_file(tmp_path, isbi_dir):
    shutil.copy(isbi_dir / IMAGE_FILE, tmp_path / IMAGE_FILE)
    (tmp_path / LABEL_FILE).write_bytes(b"<html>not found</html>")
    with pytest.raises(VolumeError, match=f"{LABEL_FILE}: not a readable TIFF"):
        load_isbi2012(tmp_path, download=False)
