"""Multi-class labels from mask folders (the real EPFL files and layouts built here), splits and tiling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emseg.data import (
    class_mask_datalist,
    cut_grid,
    split_by_fractions,
    stitch_grid,
    tile_datalist,
)
from emseg.data.class_masks import read_mask
from emseg.data.epfl import EPFL_CLASSES, EPFL_PRIORITY, epfl_datalist
from emseg.data.splits import resolve_split
from emseg.io import VolumeError


def test_epfl_labels_have_exactly_the_class_values(epfl_dir):
    items = epfl_datalist(epfl_dir, "train") + epfl_datalist(epfl_dir, "validation")
    assert len(items) == 27
    values = np.unique(np.concatenate([np.unique(i["label"]) for i in items]))
    assert values.tolist() == [0, 1, 2, 3, 4, 5]
    item = items[0]
    assert item["image"].shape == item["label"].shape == (1, 768, 1024)
    assert item["image"].dtype == item["label"].dtype == np.float32
    test = epfl_datalist(epfl_dir, "test")
    files = sorted((epfl_dir / "test" / "slices").iterdir())
    assert [i["name"] for i in test] == [f"epfl_test_{p.stem}" for p in files]


def _masks(folder, name):
    return {cls: np.any([read_mask(folder / f / name) for f in folders], axis=0) for cls, folders in EPFL_CLASSES.items()}


def test_overlap_follows_the_documented_priority(epfl_dir):
    folder = epfl_dir / "train"
    name = "training0000.png"
    masks = _masks(folder, name)
    both = masks["membranes"] & masks["mitochondria"]
    assert both.any(), "the real masks overlap: membranes and mitochondria share pixels"
    y, x = np.argwhere(both)[0]
    (item,) = class_mask_datalist(folder, EPFL_CLASSES, priority=EPFL_PRIORITY, indices=[0])
    assert item["label"][0, y, x] == 1 + list(EPFL_CLASSES).index("mitochondria")  # mitochondria outrank membranes
    reversed_priority = EPFL_PRIORITY[::-1]
    (item,) = class_mask_datalist(folder, EPFL_CLASSES, priority=reversed_priority, indices=[0])
    assert item["label"][0, y, x] == 1 + list(EPFL_CLASSES).index("membranes")


def test_empty_mask_gives_no_pixels_of_its_class(epfl_dir):
    folder = epfl_dir / "train"
    names = sorted(p.name for p in (folder / "axon").iterdir())
    empty = [i for i, n in enumerate(names) if not read_mask(folder / "axon" / n).any()]
    assert empty, "some axon masks of the real data are empty"
    (item,) = class_mask_datalist(folder, EPFL_CLASSES, priority=EPFL_PRIORITY, indices=[empty[0]])
    assert 5 not in np.unique(item["label"])


def _png(path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)


@pytest.fixture
def lab_layout(tmp_path):
    """A lab's own layout: originals/ plus labels_neurons/ and labels_axons/ (anti-aliased, overlapping)."""
    image = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 251
    neurons = np.zeros((64, 64)); neurons[:, :32] = 255; neurons[:, 32] = 100  # an anti-aliased edge
    axons = np.zeros((64, 64)); axons[:32] = 200
    for name in ("a.png", "b.png"):
        _png(tmp_path / "originals" / name, image)
        _png(tmp_path / "labels_neurons" / name, neurons)
        _png(tmp_path / "labels_axons" / name, axons if name == "a.png" else np.zeros((64, 64)))
    return tmp_path


def test_a_labs_own_layout_loads_by_configuration(lab_layout):
    classes = {"neurons": ["labels_neurons"], "axons": ["labels_axons"]}
    a, b = class_mask_datalist(lab_layout, classes, image_folder="originals", priority=["axons", "neurons"])
    label = a["label"][0]
    assert label[40, 10] == 1 and label[10, 40] == 2 and label[10, 10] == 2 and label[40, 40] == 0
    assert label[40, 32] == 0  # anti-aliased value 100 < threshold 128 is outside
    assert np.unique(b["label"]).tolist() == [0, 1]  # b's axon mask is empty
    low = class_mask_datalist(lab_layout, classes, image_folder="originals", threshold=50, indices=[0])
    assert low[0]["label"][0, 40, 32] == 1


def test_missing_mask_file_and_folder_are_named(lab_layout):
    (lab_layout / "labels_axons" / "b.png").unlink()
    with pytest.raises(VolumeError, match="labels_axons/b.png: mask missing"):
        class_mask_datalist(lab_layout, {"axons": ["labels_axons"]}, image_folder="originals")
    with pytest.raises(VolumeError, match="labels_dendrites: mask folder not found"):
        class_mask_datalist(lab_layout, {"dendrites": ["labels_dendrites"]}, image_folder="originals")


def test_mask_of_another_size_is_refused(lab_layout):
    _png(lab_layout / "labels_axons" / "a.png", np.zeros((32, 64)))
    with pytest.raises(VolumeError, match="labels_axons/a.png: mask shape"):
        class_mask_datalist(lab_layout, {"axons": ["labels_axons"]}, image_folder="originals")


def test_priority_must_name_every_class_once(lab_layout):
    with pytest.raises(ValueError, match="priority"):
        class_mask_datalist(lab_layout, {"neurons": ["labels_neurons"], "axons": ["labels_axons"]},
                            image_folder="originals", priority=["axons"])


def test_split_by_fractions_is_seeded_disjoint_and_complete():
    split = split_by_fractions(30, {"train": 0.7, "validation": 0.2, "test": 0.1}, seed=0)
    assert [len(split[k]) for k in ("train", "validation", "test")] == [21, 6, 3]
    assert sorted(sum(split.values(), [])) == list(range(30))
    assert split == split_by_fractions(30, {"train": 0.7, "validation": 0.2, "test": 0.1}, seed=0)
    assert split != split_by_fractions(30, {"train": 0.7, "validation": 0.2, "test": 0.1}, seed=1)
    explicit = resolve_split({"train": [0, 1], "validation": [2]}, 3, "x")
    assert explicit == {"train": [0, 1], "validation": [2], "test": []}
    with pytest.raises(ValueError, match="both"):
        resolve_split({"train": [0, 1], "validation": [1]}, 3, "x")


def test_crops_stitch_back_to_the_identical_image(epfl_dir):
    (item,) = epfl_datalist(epfl_dir, "test")[:1]
    for key in ("image", "label"):
        crops = cut_grid(item[key], (2, 2))
        assert [c.shape for c, _ in crops] == [(1, 384, 512)] * 4
        stitched = stitch_grid([c for c, _ in crops], [o for _, o in crops], item[key].shape)
        np.testing.assert_array_equal(stitched, item[key])


def test_tile_datalist_cuts_items_like_the_reference():
    image = np.random.default_rng(0).random((1, 1536, 2048)).astype(np.float32)
    tiles = tile_datalist([{"image": image, "label": image > 0.5, "name": "big"}], (2, 2))
    assert [t["name"] for t in tiles] == ["big_r0c0", "big_r0c1", "big_r1c0", "big_r1c1"]
    assert all(t["image"].shape == (1, 768, 1024) for t in tiles)
    assert tiles[3]["offset"] == [768, 1024]
    np.testing.assert_array_equal(tiles[3]["label"], image[:, 768:, 1024:] > 0.5)
    with pytest.raises(ValueError, match="grid"):
        cut_grid(image, (5, 2))
