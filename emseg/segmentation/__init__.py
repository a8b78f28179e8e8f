"""Instances (one label per cell) from membrane probabilities and their measurements (tuning their
parameters on a bundle's validation slices is a workflow: ``emseg.tuning``).

| module | what |
|---|---|
| ``instances`` | :func:`segment_slice` (seeded watershed), :class:`InstanceSegmenter` (a stack, linked in 3-D) |
| ``objects`` | :func:`object_table`: one CSV row per object in physical units (scikit-image regionprops) |
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
