"""Instances (one label per cell) from membrane probabilities, their measurements, and tuning.

| module | what |
|---|---|
| ``instances`` | :func:`segment_slice` (seeded watershed), :class:`InstanceSegmenter` (a stack, linked in 3-D) |
| ``objects`` | :func:`object_table`: one CSV row per object in physical units (scikit-image regionprops) |
| ``tuning`` | :func:`tune_instances`: Optuna search of the parameters on validation slices |
"""

from emseg.segmentation.instances import (
    InstanceParams,
    InstanceSegmenter,
    link_to_previous,
    segment_instances,
    segment_slice,
    segment_volume,
)
from emseg.segmentation.objects import object_table, write_object_table

__all__ = [
    "InstanceParams",
    "InstanceSegmenter",
    "link_to_previous",
    "object_table",
    "segment_instances",
    "segment_slice",
    "segment_volume",
    "write_object_table",
]
