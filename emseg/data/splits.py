"""Train / validation / test splits: explicit index lists, or random by fractions with a seed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")


def check_split(split: Mapping[str, Sequence[int]], num_slices: int, source: str | Path) -> dict[str, list[int]]:
    """Validate a {train, validation, test} -> slice indices mapping against ``num_slices``.

    Indices must lie in the volume and the three parts must not overlap, so that
    test slices are never used for training or model selection.
    """
    unknown = set(split) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"split has unknown parts {sorted(unknown)}; expected {SPLIT_NAMES}")
    parts = {name: [int(i) for i in split.get(name, [])] for name in SPLIT_NAMES}
    seen: dict[int, str] = {}
    for name, indices in parts.items():
        for index in indices:
            if not 0 <= index < num_slices:
                raise ValueError(f"split '{name}' names slice {index} but {source} has {num_slices} slices")
            if index in seen:
                raise ValueError(f"slice {index} is in both '{seen[index]}' and '{name}' splits")
            seen[index] = name
    return parts


def split_by_fractions(n: int, fractions: Mapping[str, float], seed: int = 0) -> dict[str, list[int]]:
    """Shuffle ``range(n)`` with ``seed`` and cut it by ``fractions`` (e.g. train 0.7, validation 0.2, test 0.1).

    Part sizes are rounded down, the remainder goes to the first part; every part with a
    positive fraction gets at least one item when ``n`` allows.
    """
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"fractions must be non-negative and sum to more than 0, got {dict(fractions)}")
    sizes = {k: int(n * f / total) for k, f in fractions.items()}
    for k, f in fractions.items():
        if f > 0 and sizes[k] == 0 and n > sum(sizes.values()):
            sizes[k] = 1
    first = next(iter(fractions))
    sizes[first] += n - sum(sizes.values())
    order = np.random.default_rng(seed).permutation(n).tolist()
    split, start = {}, 0
    for k, size in sizes.items():
        split[k] = sorted(order[start:start + size])
        start += size
    return split


def resolve_split(split: Mapping, n: int, source: str | Path) -> dict[str, list[int]]:
    """``split`` as index lists for ``n`` items: either explicit (``{"train": [...], ...}``) or
    ``{"fractions": {"train": 0.7, ...}, "seed": 0}``; checked for range and overlap."""
    if "fractions" in split:
        return check_split(split_by_fractions(n, split["fractions"], split.get("seed", 0)), n, source)
    return check_split(split, n, source)

