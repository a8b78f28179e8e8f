"""Cut large images into a grid of equal crops, and stitch crops back.

The TernausNet reference project cut each 1536x2048 image into four 768x1024 crops for
training; :func:`tile_datalist` does the same to MONAI data items. Full-size inference does
not need this (MONAI's sliding window covers any size); :func:`stitch_grid` puts per-crop
results back together where crops were predicted separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cut_grid(image: np.ndarray, grid: Sequence[int]) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Crops of the last two axes of ``image`` on a ``(rows, columns)`` grid, each with its (y, x) offset."""
    rows, cols = grid
    height, width = image.shape[-2:]
    if height % rows or width % cols:
        raise ValueError(f"a {height}x{width} image does not split into a {rows}x{cols} grid of equal crops")
    th, tw = height // rows, width // cols
    return [(image[..., r * th:(r + 1) * th, c * tw:(c + 1) * tw], (r * th, c * tw))
            for r in range(rows) for c in range(cols)]


def stitch_grid(tiles: Sequence[np.ndarray], offsets: Sequence[tuple[int, int]], shape: Sequence[int]) -> np.ndarray:
    """The array of ``shape`` (..., H, W) assembled from ``tiles`` placed at ``offsets``; every pixel must be covered."""
    out = np.zeros(shape, dtype=np.result_type(*tiles))
    covered = np.zeros(shape[-2:], dtype=bool)
    for tile, (y, x) in zip(tiles, offsets):
        th, tw = tile.shape[-2:]
        out[..., y:y + th, x:x + tw] = tile
        covered[y:y + th, x:x + tw] = True
    if not covered.all():
        raise ValueError(f"tiles cover {covered.sum()} of {covered.size} pixels of the {tuple(shape[-2:])} image")
    return out


def tile_datalist(items: Sequence[dict], grid: Sequence[int], keys: Sequence[str] = ("image", "label")) -> list[dict]:
    """Each item cut into ``grid`` crops (of every key in ``keys`` it has); names get ``_r{row}c{col}``,
    and ``offset`` records where the crop sat."""
    if tuple(grid) == (1, 1):
        return list(items)
    tiled = []
    for item in items:
        cuts = {k: cut_grid(item[k], grid) for k in keys if k in item}
        for n, (_, offset) in enumerate(next(iter(cuts.values()))):
            crop = {**item, **{k: cuts[k][n][0].copy() for k in cuts}}
            crop["name"] = f"{item['name']}_r{n // grid[1]}c{n % grid[1]}"
            crop["offset"] = list(offset)
            tiled.append(crop)
    return tiled
