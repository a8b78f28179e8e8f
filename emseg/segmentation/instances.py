"""Cells from cell-interior probabilities: seeded watershed per slice, and linking across slices in 3-D.

Per slice (:func:`segment_slice`): the elevation is the membrane probability (1 - interior), optionally smoothed;
seeds are either the 4-connected components of ``interior > threshold`` (``seeds="components"``, as the ISBI
challenge thins a probability map) or the h-maxima of the distance transform of that mask (``seeds="distance"``,
which splits cells touching through a thin gap); the seeds grow by watershed over the whole slice, so every pixel
belongs to a cell (with ``lines``, 1-pixel lines labelled 0 separate them, as in the challenge). Segments smaller
than ``min_size`` pixels are dropped and their pixels flooded from their neighbours.

In 3-D (``mode="3d"``, :class:`InstanceSegmenter`), the 2-D cells of each slice are linked to those of the slice
before: two segments get one label when each is the other's best match by intersection over union and that IoU is
at least ``link_iou``. Serial-section EM is anisotropic (ISBI: 50 nm between slices, 4 nm pixels), so linking 2-D
cells follows the data better than a 3-D watershed with a 12.5x stretched z. Labels are uint32, 1 upwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from emseg.io import open_slices, stack_writer
from emseg.io.safety import check_not_an_input
from emseg.io.writers import format_for_path

SEEDS = ("components", "distance")
MODES = ("2d", "3d")
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class InstanceParams:
    """Parameters of :func:`segment_slice` and of linking slices (see the module docstring).

    Attributes:
        threshold: interior probability above which a pixel belongs to a seed's mask.
        seeds: ``components`` or ``distance``.
        h: height, in pixels of distance, of the maxima kept as seeds (``distance`` seeds only).
        sigma: Gaussian smoothing (pixels) of the membrane probability before the watershed; 0: none.
        min_size: segments of fewer pixels are merged into their neighbours; 0: keep all.
        lines: keep 1-pixel watershed lines (label 0) between cells.
        mode: ``2d`` (labels of each slice on their own, numbered on from the slice before) or ``3d`` (linked).
        link_iou: least intersection over union of two segments in neighbouring slices linked in 3-D.
    """

    threshold: float = 0.5
    seeds: str = "components"
    h: float = 2.0
    sigma: float = 0.0
    min_size: int = 0
    lines: bool = False
    mode: str = "2d"
    link_iou: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold {self.threshold} is not within 0..1")
        if self.seeds not in SEEDS:
            problems.append(f"seeds {self.seeds!r} is not one of {SEEDS}")
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} is not one of {MODES}")
        if self.h < 0 or self.sigma < 0 or self.min_size < 0:
            problems.append("h, sigma and min_size must not be negative")
        if not 0.0 < self.link_iou <= 1.0:
            problems.append(f"link_iou {self.link_iou} is not within (0, 1]")
        if not isinstance(self.lines, bool):  # MONAI's CLI passes --instances#lines false as the text "false"
            problems.append(f"lines must be True or False, got {self.lines!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_mapping(cls, values: Mapping | InstanceParams | None, where: str = "instances") -> InstanceParams:
        """Parameters from a config's mapping; an unknown key is an error naming ``where`` and the known keys."""
        if values is None:
            return cls()
        if isinstance(values, InstanceParams):
            return values
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; the keys are {sorted(known)}")
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _seeds(interior: np.ndarray, params: InstanceParams) -> np.ndarray:
    mask = interior > params.threshold
    if params.seeds == "components":
        return ndimage.label(mask, structure=_FOUR_CONNECTED)[0]
    from skimage.morphology import h_maxima

    distance = ndimage.distance_transform_edt(mask)
    peaks = h_maxima(distance, params.h) if params.h > 0 else (distance > 0)
    return ndimage.label(peaks & mask, structure=np.ones((3, 3), bool))[0]


def segment_slice(interior: np.ndarray, params: InstanceParams | None = None) -> np.ndarray:
    """Cells (uint32 labels 1..n; 0 only on watershed lines) of one slice's cell-interior probability."""
    from skimage.segmentation import relabel_sequential, watershed

    params = params or InstanceParams()
    interior = np.asarray(interior, dtype=np.float32)
    if interior.ndim != 2:
        raise ValueError(f"segment_slice takes one 2-D slice, got shape {interior.shape}")
    markers = _seeds(interior, params)
    if not markers.any():
        return np.zeros(interior.shape, np.uint32)  # no cell at all
    elevation = 1.0 - interior
    if params.sigma > 0:
        elevation = ndimage.gaussian_filter(elevation, params.sigma)
    labels = watershed(elevation, markers, connectivity=1, watershed_line=params.lines)
    if params.min_size > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < params.min_size
        small[0] = False
        if small[1:].any() and not small[1:].all():
            kept = np.where(small[labels], 0, labels)
            labels = watershed(elevation, kept, connectivity=1, watershed_line=params.lines)
    return relabel_sequential(labels)[0].astype(np.uint32)  # 1..n in their order, 0 kept


def link_to_previous(previous: np.ndarray, labels: np.ndarray, next_label: int, min_iou: float) -> np.ndarray:
    """``labels`` (1..n) of a slice, renumbered: a segment takes the label of its mutual best match in
    ``previous`` when their IoU is at least ``min_iou``; every other segment takes a new label from ``next_label``."""
    count = int(labels.max())
    result = np.zeros(count + 1, np.uint32)
    both = (previous > 0) & (labels > 0)
    links: dict[int, int] = {}
    if both.any():
        pairs, overlap = np.unique(np.stack([previous[both], labels[both]]), axis=1, return_counts=True)
        previous_ids, previous_sizes = np.unique(previous[previous > 0], return_counts=True)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        union = previous_sizes[np.searchsorted(previous_ids, pairs[0])] + sizes[pairs[1]] - overlap
        iou = overlap / union
        order = np.argsort(-iou, kind="stable")
        best_for_previous, best_for_current = {}, {}
        for k in order:  # highest IoU first: the first pair seen for an id is its best match
            best_for_previous.setdefault(int(pairs[0, k]), (int(pairs[1, k]), iou[k]))
            best_for_current.setdefault(int(pairs[1, k]), (int(pairs[0, k]), iou[k]))
        for current, (old, value) in best_for_current.items():
            if value >= min_iou and best_for_previous[old][0] == current:
                links[current] = old
    for current in range(1, count + 1):
        if current in links:
            result[current] = links[current]
        else:
            result[current] = next_label
            next_label += 1
    return result[labels]


class InstanceSegmenter:
    """Segments the slices of a stack one after another (``segmenter(interior)`` per slice), numbering labels on
    from slice to slice; in ``3d`` mode linking each slice's cells to the slice before."""

    def __init__(self, params: InstanceParams | Mapping | None = None) -> None:
        self.params = InstanceParams.from_mapping(params)
        self.previous: np.ndarray | None = None
        self.next_label = 1

    def __call__(self, interior: np.ndarray) -> np.ndarray:
        labels = segment_slice(interior, self.params)
        if self.params.mode == "3d" and self.previous is not None:
            labels = link_to_previous(self.previous, labels, self.next_label, self.params.link_iou)
        else:
            labels = np.where(labels > 0, labels + np.uint32(self.next_label - 1), 0).astype(np.uint32)
        self.next_label = max(self.next_label, int(labels.max()) + 1)
        self.previous = labels
        return labels


def segment_instances(interior: Iterable[np.ndarray], params: InstanceParams | Mapping | None = None
                      ) -> Iterator[np.ndarray]:
    """Labels of each slice of ``interior`` probabilities, one slice at a time (see :class:`InstanceSegmenter`)."""
    segmenter = InstanceSegmenter(params)
    for image in interior:
        yield segmenter(image)


def segment_volume(interior: np.ndarray, params: InstanceParams | Mapping | None = None) -> np.ndarray:
    """(Z, H, W) uint32 labels of a (Z, H, W) (or one (H, W)) interior probability volume."""
    interior = np.asarray(interior)
    volume = interior[None] if interior.ndim == 2 else interior
    labels = np.stack(list(segment_instances(volume, params)))
    return labels[0] if interior.ndim == 2 else labels


def interior_slice(image: np.ndarray, where: str, invert: bool = False) -> np.ndarray:
    """One slice of a probability file as float32 interior probability: floats in [0, 1] as they are, uint8 / 255
    (an 8-bit probability map or a 0/255 mask); ``invert`` for a membrane probability. Anything else is refused."""
    image = np.asarray(image)
    if image.dtype.kind == "f":
        if image.size and (image.min() < 0 or image.max() > 1):
            raise ValueError(f"{where}: float values {image.min():.3g}..{image.max():.3g} are not probabilities in "
                             f"[0, 1]")
        probability = image.astype(np.float32)
    elif image.dtype == np.uint8:
        probability = image / np.float32(255)
    else:
        raise ValueError(f"{where}: pixel type {image.dtype}; expected probabilities (float in [0, 1] or uint8 "
                         f"0..255). A label image is segmented already: score it with `emseg evaluate`")
    return 1.0 - probability if invert else probability


def segment_file(probabilities: str | Path, output: str | Path, params: InstanceParams | Mapping | None = None,
                 key: str | None = None, invert: bool = False, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 overwrite: bool = False) -> tuple[Path, int]:
    """Segment a cell-interior probability stack (any format emseg reads) into a uint32 label stack written as the
    output's name says (``.tif``, ``.zarr``, ``.nii.gz``), one slice at a time; returns the output and the count
    of labels."""

    output = Path(output)
    check_not_an_input(output, [probabilities])
    segmenter = InstanceSegmenter(params)
    with open_slices(probabilities, key) as source:
        with stack_writer(format_for_path(output), output, "uint32", source.shape, len(source), spacing,
                          overwrite) as writer:
            for index, image in enumerate(source):
                writer.write(segmenter(interior_slice(image, f"{probabilities}: slice {index}", invert)))
    return output, segmenter.next_label - 1
