"""Fuzzed training data in process (the ISBI-layout data set a training loads): an image stack with a label stack
that disagrees with it (other slice count, slice size, pixel type, values) or that is damaged either loads as the
right datalist or is refused with one error naming one of the two files."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
from hypothesis import assume, given, note
from hypothesis import strategies as st

from emseg.data.isbi2012 import IMAGE_FILE, LABEL_FILE, isbi2012_datalist
from emseg.io import VolumeError

from .damage import apply, damages

SLICES, SIDE = 30, 16  # the ISBI layout: 30 slices, the default split's 22 training slices


@st.composite
def datasets(draw):
    """(image, label) stacks: the label drawn to agree with the image or to differ in one or more ways."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (SLICES, SIDE, SIDE), dtype=np.uint8)
    count = draw(st.sampled_from([SLICES, SLICES, 1, SLICES - 1, SLICES + 1]))
    height, width = draw(st.sampled_from([(SIDE, SIDE), (SIDE, SIDE), (SIDE - 1, SIDE), (SIDE, 2 * SIDE)]))
    dtype = draw(st.sampled_from(["uint8", "uint8", "uint16", "float32"]))
    values = draw(st.sampled_from([(0, 255), (0, 255), (0, 1), (0, 128, 255)]))
    label = rng.choice(np.array(values), size=(count, height, width)).astype(dtype)
    return image, label


@given(pair=datasets(), damage=st.one_of(st.none(), st.tuples(st.sampled_from([IMAGE_FILE, LABEL_FILE]),
                                                                damages())))
def test_training_data_loads_or_names_the_file(pair, damage):
    image, label = pair
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        tifffile.imwrite(folder / IMAGE_FILE, image, photometric="minisblack")
        tifffile.imwrite(folder / LABEL_FILE, label, photometric="minisblack")
        if damage is not None:
            assume(apply(damage[1], folder / damage[0]) is not None)
        start = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                items = isbi2012_datalist(folder, "train", download=False)
        except (VolumeError, ValueError) as err:  # ValueError: a split naming slices the stack lacks
            note(f"refused: {err}")
            assert str(folder / IMAGE_FILE) in str(err) or str(folder / LABEL_FILE) in str(err), err
            return
        finally:
            assert time.monotonic() - start < 5
    agrees = label.shape == image.shape and set(np.unique(label).tolist()) <= {0, 1, 255}  # 0/1 masks are read as masks
    assert damage is not None or agrees, f"a label stack {label.shape} {label.dtype} {np.unique(label)} was accepted"
    assert len(items) == 22
    for item in items:
        assert item["image"].shape == item["label"].shape == (1, SIDE, SIDE)
        assert set(np.unique(item["label"]).tolist()) <= {0.0, 1.0}
    if damage is None:
        np.testing.assert_array_equal(items[0]["image"][0], image[0])
        np.testing.assert_array_equal(items[0]["label"][0], label[0] > 0)
