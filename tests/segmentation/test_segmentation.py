"""Instances from membrane probabilities: hand-made cells, the ISBI ground truth, scores, the object table, tuning,
and the commands (`emseg segment`, `emseg evaluate` of labels, `emseg objects`) with their bad inputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from emseg.evaluation import challenge_scores, ground_truth_segments
from emseg.evaluation.scores import instance_scores
from emseg.evaluation.thinning import fiji_thinning
from emseg.segmentation import (
    InstanceParams,
    link_to_previous,
    object_table,
    segment_slice,
    segment_volume,
)
from emseg.tuning import (
    BASELINE_THRESHOLDS,
    best_instance_params,
    challenge_baseline,
    tune_instances,
)


def emseg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "emseg.cli", *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode:
        pytest.fail(f"emseg {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def last_line(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).strip().splitlines()[-1]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images split the pixels alike (labels may differ by name)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def two_touching_squares() -> tuple[np.ndarray, np.ndarray]:
    """Interior probability of two 20x20 cells touching through a 6-pixel gap in the membrane between them, and
    the two cells as labels."""
    probability = np.zeros((40, 64), np.float32)
    cells = np.zeros((40, 64), np.int32)
    probability[10:30, 10:30], cells[10:30, 10:30] = 1.0, 1
    probability[10:30, 31:51], cells[10:30, 31:51] = 1.0, 2
    probability[17:23, 30] = 1.0  # the gap: one component of interior, two cells
    return probability, cells


def test_distance_seeds_split_cells_that_touch_where_components_merge_them():
    probability, cells = two_touching_squares()
    merged = segment_slice(probability, InstanceParams(seeds="components"))
    assert len(np.unique(merged[cells > 0])) == 1
    split = segment_slice(probability, InstanceParams(seeds="distance", h=2.0))
    assert split.dtype == np.uint32 and split.min() >= 1  # without lines every pixel is in a cell
    assert same_partition(split[cells > 0], cells[cells > 0])


def test_a_fragment_cut_off_by_a_faint_line_is_merged_into_its_cell():
    probability = np.zeros((40, 40), np.float32)
    probability[5:35, 5:35] = 0.9
    probability[5:35, 30] = 0.3  # a faint false membrane cuts a 4-pixel-wide strip off the cell
    fragmented = segment_slice(probability, InstanceParams(threshold=0.5))
    assert len(np.unique(fragmented[5:35, 5:35])) == 2
    whole = segment_slice(probability, InstanceParams(threshold=0.5, min_size=600))  # its basin: ~400 pixels
    assert len(np.unique(whole[5:35, 5:35])) == 1 and len(np.unique(whole)) == 1


def test_lines_separate_cells_with_label_zero():
    probability, cells = two_touching_squares()
    probability[17:23, 30] = 0.0  # now two components
    labels = segment_slice(probability, InstanceParams(lines=True))
    assert set(np.unique(labels)) == {0, 1, 2}
    assert same_partition(labels[cells > 0], cells[cells > 0])


def test_a_cell_over_three_slices_keeps_its_label_in_3d():
    volume = np.zeros((3, 40, 40), np.float32)
    for z, shift in enumerate((0, 2, 4)):  # a cell drifting by 2 pixels per slice
        volume[z, 5 + shift:25 + shift, 5:25] = 1.0
    volume[1, 30:38, 30:38] = 1.0  # a cell seen in the middle slice only
    params = InstanceParams(lines=True)
    linked = segment_volume(volume, {**params.as_dict(), "mode": "3d"})
    drifting = [linked[z, 15, 15] for z in range(3)]
    assert drifting[0] == drifting[1] == drifting[2] != 0
    assert linked[1, 34, 34] not in (0, drifting[0])
    flat = segment_volume(volume, params)
    assert len({flat[z, 15, 15] for z in range(3)}) == 3  # 2-D: labels numbered on, never shared


def test_linking_needs_a_mutual_best_match_above_the_iou():
    previous = np.zeros((10, 20), np.uint32)
    previous[:, :10] = 7
    current = np.zeros((10, 20), np.uint32)
    current[:, :4], current[:, 4:10] = 1, 2  # 7 split in two: only the larger part (IoU 0.6) keeps its label
    assert np.array_equal(np.unique(link_to_previous(previous, current, 8, 0.5)[:, :10]), [7, 8])
    assert np.array_equal(np.unique(link_to_previous(previous, current, 8, 0.7)[:, :10]), [8, 9])


def test_instances_of_the_isbi_ground_truth_are_its_cells(isbi_volumes):
    labels = isbi_volumes[1][:3]
    instances = segment_volume((labels > 0).astype(np.float32), InstanceParams(lines=True))
    for instance, label in zip(instances, labels):
        cells = ground_truth_segments(label)
        assert same_partition(instance[label > 0], cells[label > 0])
        scores = instance_scores(instance, label)
        assert scores["v_rand"] == pytest.approx(1.0, abs=1e-12) and scores["v_info"] == pytest.approx(1.0, abs=1e-12)
        assert scores["adapted_rand_error"] == pytest.approx(0.0, abs=1e-12)


def noisy_probability(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A probability map built from ground truth: blurred, with noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter((labels > 0).astype(np.float32), (0, 2.0, 2.0))
    return np.clip(blurred + rng.normal(0, 0.2, labels.shape), 0, 1).astype(np.float32)


def test_splits_and_merges_show_in_the_matching_scores(isbi_volumes):
    label = isbi_volumes[1][0]
    cells = ground_truth_segments(label)
    over = np.where(label > 0, cells * 2 + (np.arange(label.shape[1]) % 2 == 0), 0)  # every cell split in two
    under = (label > 0).astype(np.int32)  # every cell merged into one
    split, merged = instance_scores(over, label), instance_scores(under, label)
    assert split["v_rand_merge"] == pytest.approx(1.0) and split["v_rand_split"] < 0.6 and split["vi_merge"] < 1e-9
    assert merged["v_rand_split"] == pytest.approx(1.0) and merged["v_rand_merge"] < 0.2 and merged["vi_split"] < 1e-9
    assert split["vi_split"] > 0.5 and merged["vi_merge"] > 1.0


def test_tuning_starts_from_the_threshold_trials_and_reports_the_challenge_score(isbi_volumes):
    labels = isbi_volumes[1][:2, :192, :192]
    probability = noisy_probability(labels)
    study = tune_instances(list(probability), list(labels), trials=len(BASELINE_THRESHOLDS) + 4, seed=0)
    first = [t.params for t in study.trials[:len(BASELINE_THRESHOLDS)]]
    assert [p["threshold"] for p in first] == list(BASELINE_THRESHOLDS)
    assert all(p["seeds"] == "components" and p["lines"] for p in first)
    assert study.best_value >= max(t.value for t in study.trials[:len(BASELINE_THRESHOLDS)])
    assert len(study.trials) == 13
    per_threshold = np.mean([challenge_scores(p, t)[:, 0] for p, t in zip(probability, labels)], axis=0)
    assert challenge_baseline(list(probability), list(labels)) == pytest.approx(per_threshold.max(), abs=1e-12)
    best = best_instance_params(study, InstanceParams(mode="3d"))
    assert best.mode == "3d" and best.as_dict().items() >= {k: v for k, v in study.best_params.items()
                                                             if k != "h" or best.seeds == "distance"}.items()


def test_object_table_measures_in_physical_units():
    labels = np.zeros((3, 20, 30), np.uint32)
    labels[0:2, 2:6, 3:9] = 4  # 2 slices of 4x6 pixels
    labels[1, 10:15, 10:20] = 9  # one slice of 5x10
    image = np.arange(labels.size, dtype=np.float32).reshape(labels.shape)
    spacing = (0.05, 0.004, 0.004)
    rows = {row["label"]: row for row in object_table(labels, image, spacing)}
    assert set(rows) == {4, 9}
    assert rows[4]["volume_um3"] == pytest.approx(48 * 0.05 * 0.004 * 0.004)
    assert (rows[4]["first_slice"], rows[4]["end_slice"], rows[4]["slices"]) == (0, 2, 2)
    assert rows[4]["centroid_y_um"] == pytest.approx(3.5 * 0.004) and rows[4]["centroid_z_um"] == pytest.approx(0.025)
    assert rows[9]["mean_intensity"] == pytest.approx(image[labels == 9].mean())
    per_slice = object_table(labels, None, spacing, per_slice=True)
    assert [(r["label"], r["slice"]) for r in per_slice] == [(4, 0), (4, 1), (9, 1)]
    assert per_slice[2]["area_um2"] == pytest.approx(50 * 0.004 ** 2)
    assert 0.7 * 30 * 0.004 < per_slice[2]["perimeter_um"] <= 30 * 0.004


@pytest.mark.slow
def test_instance_score_of_labels_equals_the_probability_score_at_their_threshold(isbi_volumes, tmp_path):
    """The challenge's cells of a map at threshold t (Fiji's thinning), scored as a label image by emseg evaluate,
    score what emseg evaluate gives the map at t; emseg segment's probability-guided cells are another procedure."""
    labels = isbi_volumes[1][:2, :256, :256]
    probability = noisy_probability(labels, seed=1)
    tifffile.imwrite(tmp_path / "prob.tif", probability)
    tifffile.imwrite(tmp_path / "gt.tif", labels)
    tifffile.imwrite(tmp_path / "challenge-cells.tif", np.stack([fiji_thinning(p, 0.4) for p in probability])
                     .astype(np.uint16))
    emseg("segment", str(tmp_path / "prob.tif"), str(tmp_path / "cells.tif"), "--threshold", "0.4", "--lines")
    cells = tifffile.imread(tmp_path / "cells.tif")
    assert cells.dtype == np.uint16 and cells.shape == labels.shape  # uint32 labels that fit ImageJ's 16 bits
    emseg("evaluate", str(tmp_path / "challenge-cells.tif"), str(tmp_path / "gt.tif"), "--output",
          str(tmp_path / "inst"))
    emseg("evaluate", str(tmp_path / "cells.tif"), str(tmp_path / "gt.tif"), "--output", str(tmp_path / "guided"))
    emseg("evaluate", str(tmp_path / "prob.tif"), str(tmp_path / "gt.tif"), "--output", str(tmp_path / "prob"))
    instances = json.loads((tmp_path / "inst" / "summary.json").read_text())
    guided = json.loads((tmp_path / "guided" / "summary.json").read_text())
    sweep = json.loads((tmp_path / "prob" / "summary.json").read_text())
    at = sweep["thresholds"].index(0.4)
    assert instances["scored_as"] == guided["scored_as"] == "instances"
    for score in ("v_rand", "v_rand_split", "v_rand_merge", "v_info"):
        assert instances[score] == pytest.approx(sweep["per_threshold"][score][at], abs=1e-12)
    assert guided["v_rand"] != pytest.approx(instances["v_rand"], abs=1e-6)  # lines along the probability valley
    rows = list(csv.DictReader(open(tmp_path / "inst" / "metrics.csv")))
    assert len(rows) == 2 and {"adapted_rand_error", "vi_split", "vi_merge"} <= set(rows[0])


@pytest.mark.slow
def test_objects_command_takes_the_pixel_size_of_an_ome_zarr(tmp_path):
    labels = np.zeros((2, 16, 16), np.uint32)
    labels[:, 4:8, 4:12] = 3
    from emseg.io import write_volume

    write_volume(tmp_path / "cells.zarr", labels, "zarr", "uint32", spacing=(0.05, 0.004, 0.004))
    result = emseg("objects", str(tmp_path / "cells.zarr"), str(tmp_path / "objects.csv"))
    rows = list(csv.DictReader(open(tmp_path / "objects.csv")))
    assert len(rows) == 1 and float(rows[0]["volume_um3"]) == pytest.approx(64 * 0.05 * 0.004 ** 2)
    assert "[0.05, 0.004, 0.004]" in last_line(result)
    again = emseg("objects", str(tmp_path / "cells.zarr"), str(tmp_path / "objects.csv"), check=False)
    assert again.returncode == 1 and "objects.csv" in last_line(again) and "exists" in last_line(again)


@pytest.mark.slow
def test_bad_inputs_of_segment_end_with_one_clear_line(tmp_path):
    labels = np.zeros((1, 16, 16), np.uint32)
    labels[0, 2:6, 2:6] = 5
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "prob.tif", np.full((1, 16, 16), 0.7, np.float32))
    tifffile.imwrite(tmp_path / "wide.tif", np.full((1, 16, 16), 3.0, np.float32))
    (tmp_path / "params.json").write_text(json.dumps({"instances": {"treshold": 0.3}}))
    cases = [
        (["segment", str(tmp_path / "labels.tif"), str(tmp_path / "out.tif")], ["labels.tif", "uint32", "evaluate"]),
        (["segment", str(tmp_path / "wide.tif"), str(tmp_path / "out.tif")], ["wide.tif", "[0, 1]"]),
        (["segment", str(tmp_path / "prob.tif"), str(tmp_path / "out.tif"), "--params", str(tmp_path / "params.json")],
         ["params.json", "treshold", "threshold"]),
        (["segment", str(tmp_path / "prob.tif"), str(tmp_path / "prob.tif")], ["prob.tif", "input"]),
        (["segment", str(tmp_path / "prob.tif"), str(tmp_path / "out.png")], ["out.png", ".tif"]),
        (["segment", str(tmp_path / "prob.tif"), str(tmp_path / "out.tif"), "--threshold", "1.5"],
         ["threshold", "0..1"]),
    ]
    for args, words in cases:
        result = emseg(*args, check=False)
        line = last_line(result)
        assert result.returncode == 1 and all(word in line for word in words), (args, line)
    assert not (tmp_path / "out.tif").exists()
