"""Small helpers that turn network inputs and outputs into pictures."""

from __future__ import annotations

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Contrast-stretch a 2-D image (0.5-99.5 percentiles) to uint8 for display."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
