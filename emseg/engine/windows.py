"""Which windows a slice is predicted in: the whole slice at once when it fits, else sliding windows."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SlidingWindowInferer


class SliceInferer(Inferer):
    """Predict a slice of at most ``whole_slice_pixels`` pixels as one window; larger slices with MONAI's
    ``SlidingWindowInferer`` (``roi_size``, ``overlap``, ``mode`` and the other keyword arguments).

    One window has no overlap to compute twice (a 512x512 slice in 256x256 windows at overlap 0.5 is 9 windows,
    2.25 times the pixels) and no window borders inside the slice. The slice is padded by reflection to a multiple
    of ``size_divisor`` (what the network's downsampling needs) and cropped back. ``whole_slice_pixels`` 0 always
    slides windows.
    """

    def __init__(self, roi_size: Sequence[int], whole_slice_pixels: int = 2048 * 2048, size_divisor: int = 32,
                 **sliding_window: Any) -> None:
        overlap = sliding_window.get("overlap", 0.25)
        if any(not 0 <= o < 1 for o in (overlap if isinstance(overlap, (list, tuple)) else [overlap])):
            raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}")  # also when no window slides
        self.whole_slice_pixels = int(whole_slice_pixels)
        self.size_divisor = int(size_divisor)
        self.sliding = SlidingWindowInferer(roi_size=roi_size, **sliding_window)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        spatial = inputs.shape[2:]
        if math.prod(spatial) > self.whole_slice_pixels:
            return self.sliding(inputs, network, *args, **kwargs)
        padding = []
        for size in reversed(spatial):
            extra = -size % self.size_divisor
            padding += [extra // 2, extra - extra // 2]
        mode = "reflect" if all(p < s for p, s in zip(padding, [s for s in reversed(spatial) for _ in (0, 1)])) \
            else "replicate"
        padded = F.pad(inputs, padding, mode=mode) if any(padding) else inputs
        output = network(padded, *args, **kwargs)
        if not any(padding):
            return output
        crop = (...,) + tuple(slice(before, before + size)
                               for before, size in zip(padding[-2::-2], spatial))
        if isinstance(output, (list, tuple)):
            return type(output)(o[crop] for o in output)
        return output[crop]
