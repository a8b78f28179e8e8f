"""The napari plugin driven as a user drives it, in a real viewer (``python -m pytest -m gui`` under xvfb-run):
open files and samples, segment with the tiny trained bundle, paint strokes and fine-tune, measure, score."""

from __future__ import annotations

import json

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from conftest import SHARED_DATA, tiny_unet_copy  # noqa: E402

from emseg.evaluation.scores import score_instances  # noqa: E402
from emseg.inference import open_predictor  # noqa: E402
from emseg.io import write_ome_zarr, write_volume  # noqa: E402
from emseg.io.readers import open_slices  # noqa: E402

pytestmark = pytest.mark.gui
SLICES = 3  # ISBI slices the widgets work on (the tiny model predicts a 512x512 slice in about 0.1 s)


@pytest.fixture
def viewer(make_napari_viewer, monkeypatch):
    monkeypatch.setenv("EMSEG_DATA", str(SHARED_DATA))
    return make_napari_viewer(show=True)  # a shown window (on xvfb's display): its canvas renders


@pytest.fixture
def isbi(viewer):
    """The ISBI sample opened through File > Open Sample, cut to the first SLICES slices."""
    layers = viewer.open_sample("emseg", "isbi2012")
    image, labels = layers
    assert image.data.shape == labels.data.shape == (30, 512, 512) and np.allclose(image.scale, (0.05, 0.004, 0.004))
    assert 0.2 < (labels.data == 1).mean() < 0.3 and set(np.unique(labels.data)) == {1, 2}  # membrane: about 22%
    for layer in layers:
        layer.data = layer.data[:SLICES]
    return layers


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("emseg", name)
    return widget


def wait(qtbot, worker, timeout=120_000):
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass


def test_reader_opens_tiff_with_spacing_and_zarr_lazily(viewer, tmp_path, isbi_volumes):
    volume = isbi_volumes[0][:4]
    write_volume(tmp_path / "stack.tif", volume, dtype="uint8", spacing=(0.05, 0.004, 0.004))
    [layer] = viewer.open(str(tmp_path / "stack.tif"), plugin="emseg")
    assert layer.data.shape == (4, 512, 512) and np.array_equal(layer.data, volume)
    assert np.allclose(layer.scale, (0.05, 0.004, 0.004))
    with open_slices(tmp_path / "stack.tif") as source:
        write_ome_zarr(source, tmp_path / "stack.zarr", spacing=(0.05, 0.004, 0.004), chunk=128, levels=2)
    [pyramid] = viewer.open(str(tmp_path / "stack.zarr"), plugin="emseg")
    assert pyramid.multiscale and type(pyramid.data[0]).__module__.startswith("dask")
    assert pyramid.data[0].shape == (4, 512, 512) and pyramid.data[1].shape == (4, 256, 256)
    assert np.array_equal(np.asarray(pyramid.data[0][2]), volume[2])
    assert np.allclose(pyramid.scale, (0.05, 0.004, 0.004))


def test_sample_data_says_where_to_put_missing_files(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("EMSEG_DATA", str(tmp_path))
    from emseg.napari.samples import isbi2012

    with pytest.raises(Exception, match=f"{tmp_path}/isbi2012.*emseg data download isbi2012 --root"):
        isbi2012()


def test_segment_adds_a_mask_at_the_image_scale_and_shows_it(viewer, isbi, qtbot, tiny_unet, tmp_path):
    image, _ = isbi
    widget = dock(viewer, "Segment")
    bundle = tiny_unet / "bundles" / "unet"
    widget.model.value, widget.image.value, widget.output.value = str(bundle), image, "class mask"
    wait(qtbot, widget.start())
    mask = viewer.layers[-1]
    assert mask.name == "ISBI 2012 classes (emseg-unet v1)" and isinstance(mask, napari.layers.Labels)
    assert np.allclose(mask.scale, image.scale) and mask.metadata["class_names"] == ["membrane", "interior"]
    expected = [p.argmax(0) + 1 for p in open_predictor(bundle).predict(list(image.data))]
    assert np.array_equal(mask.data, np.stack(expected))
    assert widget.status.value.startswith("done") and widget.progress.value == SLICES
    # the screenshot shows the result: the canvas changes when the mask layer is hidden
    viewer.reset_view()
    shown = viewer.screenshot(str(tmp_path / "segmented.png"), canvas_only=True)
    mask.visible = False
    hidden = viewer.screenshot(canvas_only=True)
    assert (tmp_path / "segmented.png").stat().st_size > 10_000
    assert shown.shape == hidden.shape and np.abs(shown.astype(int) - hidden).mean() > 5


def test_segment_cells_and_probabilities(viewer, isbi, qtbot, tiny_unet):
    image, _ = isbi
    widget = dock(viewer, "Segment")
    widget.model.value, widget.image.value = str(tiny_unet / "bundles" / "unet"), image
    widget.output.value = "probabilities"
    wait(qtbot, widget.start())
    membrane, interior = viewer.layers[-2:]
    assert interior.name == "ISBI 2012 interior probability (emseg-unet v1)"
    assert np.allclose(membrane.data + interior.data, 1.0, atol=1e-5)
    widget.output.value = "cells"
    wait(qtbot, widget.start())
    cells = viewer.layers[-1]
    predictor = open_predictor(tiny_unet / "bundles" / "unet")
    segmenter = predictor.segmenter()  # the bundle's watershed parameters, as the widget uses them
    expected = [segmenter(p[predictor.interior_class]) for p in predictor.predict(list(image.data))]
    assert cells.data.dtype == np.uint32 and np.array_equal(cells.data, np.stack(expected))


def test_cancel_stops_between_slices(viewer, qtbot, tiny_unet, isbi_volumes):
    image = viewer.add_image(isbi_volumes[0], name="all slices")
    widget = dock(viewer, "Segment")
    widget.model.value, widget.image.value = str(tiny_unet / "bundles" / "unet"), image
    widget.output.value = "class mask"
    worker = widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=60_000)
    widget.cancel()
    wait(qtbot, worker)
    done = widget.progress.value
    assert 1 <= done < 30 and widget.status.value == f"cancelled after {done} of 30 slices"
    assert viewer.layers[-1].data[done:].max() == 0  # nothing past the cancelled slice


def test_a_bad_model_is_one_message_in_the_viewer(viewer, isbi, qtbot, tmp_path):
    widget = dock(viewer, "Segment")
    widget.model.value, widget.image.value = str(tmp_path / "nowhere.zip"), isbi[0]
    wait(qtbot, widget.start())
    assert widget.status.value.startswith(f"Segment: init_from {tmp_path / 'nowhere.zip'}: no such file or folder")
    assert "\n" not in widget.status.value and len(viewer.layers) == 2


def test_strokes_fine_tune_to_a_new_run_that_segments_again(viewer, isbi, qtbot, tiny_unet, tmp_path):
    image, labels = isbi
    bundle = tiny_unet_copy(tiny_unet, tmp_path / "lab") / "bundles" / "unet"
    widget = dock(viewer, "Fine-tune")
    widget.bundle.value, widget.image.value = str(bundle), image
    strokes = widget.add_strokes_layer()
    assert strokes.name == "strokes (1 = membrane, 2 = interior)" and widget.strokes.value.name == strokes.name
    rng = np.random.default_rng(0)
    for z in (0, 2):  # a few painted pixels (1 in 50) on two slices, copied from the ISBI labels
        painted = rng.random(labels.data.shape[1:]) < 0.02
        strokes.data[z][painted] = labels.data[z][painted]
    widget.epochs.value, widget.epoch_length.value = 2, 2
    widget.overrides = {"patch_size": [64, 64], "batch_size": 2, "crops_per_slice": 2, "amp": False,
                        "channels_last": False, "num_workers": 0}
    wait(qtbot, widget.start(), timeout=600_000)
    record = json.loads((widget.run_dir / "run.json").read_text())
    assert record["status"] == "FINISHED", widget.status.value
    assert record["parent"]["source"] == str(bundle) and record["split"] == {"train": [0], "validation": [1]}
    assert sorted(p.name for p in (widget.dataset_dir / "images").iterdir()) == ["slice_0000.tif", "slice_0002.tif"]
    assert record["mlflow_run_id"] and len(widget.losses) == 2 and widget.status.value.startswith("run ")
    # segment again with the new run (preset in the widget), then promote it
    widget.segment.output.value = "class mask"
    wait(qtbot, widget.segment.start())
    assert viewer.layers[-1].name == f"ISBI 2012 classes ({widget.run_dir.name})"
    assert viewer.layers[-1].metadata["class_names"] == ["background", "membrane"]
    widget.promote_run()
    assert json.loads((bundle / "models" / "model.json").read_text())["run_name"] == widget.run_dir.name


def test_measure_table_has_one_row_per_label_and_jumps(viewer, qtbot, isbi_volumes):
    cells = np.zeros((3, 64, 64), np.uint32)
    cells[0, 5:10, 5:10] = 4
    cells[1:3, 30:40, 20:50] = 9
    cells[2, 50:60, 50:60] = 11
    layer = viewer.add_labels(cells, name="cells", scale=(0.05, 0.004, 0.004))
    widget = dock(viewer, "Measure")
    widget.labels.value = layer
    rows = widget.measure()
    assert [r["label"] for r in rows] == [4, 9, 11] and widget.table.rowCount() == 3
    assert rows[1]["volume_um3"] == pytest.approx(2 * 10 * 30 * 0.05 * 0.004 * 0.004)
    widget.table.cellClicked.emit(1, 0)
    assert layer.selected_label == 9 and viewer.dims.current_step[0] == 1
    assert viewer.camera.center[-2:] == pytest.approx((34.5 * 0.004, 34.5 * 0.004))


def test_score_a_mask_and_cells_against_the_labels(viewer, isbi, qtbot, tmp_path):
    image, labels = isbi
    widget = dock(viewer, "Score")
    perfect = viewer.add_labels(labels.data.copy(), name="perfect", metadata={"class_names": ["membrane", "interior"]})
    widget.prediction.value, widget.truth.value = perfect, labels
    scores = widget.score()
    assert scores.summary["v_rand"] == pytest.approx(1.0) and "v_rand" in widget.result.value
    from skimage.measure import label

    cells = viewer.add_labels(np.stack([label(s == 2, connectivity=1) for s in labels.data]).astype(np.uint32))
    widget.prediction.value = cells
    scores = widget.score()
    direct = score_instances(list(cells.data), list(labels.data == 2))
    assert scores.summary["v_rand"] == pytest.approx(direct.summary["v_rand"])
    widget.prediction.value = image
    assert widget.score() is None and widget.status.value.startswith("Score: ISBI 2012: only a cell-interior")
