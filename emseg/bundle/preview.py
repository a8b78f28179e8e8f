"""See what a bundle trains on: augmented image/label pairs from its own training pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np

from emseg.engine.paths import load_config
from emseg.io.safety import OutputError
from emseg.visualize import to_uint8


def augmented_pairs(bundle: str | Path, count: int, seed: int = 0, **overrides) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``count`` (image, label) 2-D pairs from ``bundle``'s ``train#dataset`` (crops + augmentation), or with
    ``feed="device"`` from its ``train#feed`` (batches cut and augmented on the device).

    ``overrides`` replace config keys (e.g. ``dataset_dir``, ``augmentation``, ``train#random_transforms``).
    Labels are the class channel; images are as the network sees them (normalised).
    """
    from monai.utils import set_determinism


    parser = load_config(Path(bundle) / "configs" / "train.json", overrides)
    set_determinism(seed)
    if overrides.get("feed") == "device":  # whole batches cut and augmented on the device
        parser["seed"] = seed
        produced = 0
        while True:
            for batch in parser.get_parsed_content("train#feed"):
                for image, label in zip(batch["image"].cpu().numpy(), batch["label"].cpu().numpy()):
                    yield image[0], label[0]
                    produced += 1
                    if produced == count:
                        return
    dataset = parser.get_parsed_content("train#dataset")
    produced = 0
    while produced < count:
        for index in range(len(dataset)):
            samples = dataset[index]
            for sample in samples if isinstance(samples, list) else [samples]:
                yield np.asarray(sample["image"])[0], np.asarray(sample["label"])[0]
                produced += 1
                if produced == count:
                    return


def overlay(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """RGB uint8 image with the outline of the label's cells (interior = 1) drawn in red."""
    from skimage.segmentation import find_boundaries

    rgb = np.repeat(to_uint8(image)[..., None], 3, axis=-1)
    rgb[find_boundaries(label > 0.5, mode="inner")] = (255, 40, 40)
    return rgb


def preview_grid(pairs: list[tuple[np.ndarray, np.ndarray]], columns: int = 4, gap: int = 4) -> np.ndarray:
    """Tile overlays of ``pairs`` into one RGB image, ``columns`` per row."""
    columns = max(1, min(columns, len(pairs)))
    rows = math.ceil(len(pairs) / columns)
    h, w = pairs[0][0].shape
    grid = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for i, (image, label) in enumerate(pairs):
        r, c = divmod(i, columns)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = overlay(image, label)
    return grid


def save_pairs(pairs: Iterator[tuple[np.ndarray, np.ndarray]], folder: str | Path, overwrite: bool = False) -> int:
    """Write pairs as ``images/NNNNN.png`` (8-bit, contrast-stretched) and ``labels/NNNNN.png`` (255 = interior).

    A folder that already holds pairs is refused unless ``overwrite``; then only ``NNNNN.png`` files are replaced.
    """
    from PIL import Image


    folder = Path(folder)
    earlier = [p for sub in ("images", "labels") if (folder / sub).is_dir() for p in (folder / sub).iterdir()]
    if earlier and not overwrite:
        raise OutputError(f"{folder}: holds earlier pairs ({earlier[0]}); choose another folder, or pass --overwrite "
                          f"to replace its NNNNN.png files")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    written = 0
    for written, (image, label) in enumerate(pairs, start=1):
        Image.fromarray(to_uint8(image)).save(folder / "images" / f"{written - 1:05d}.png")
        Image.fromarray(((label > 0.5) * 255).astype(np.uint8)).save(folder / "labels" / f"{written - 1:05d}.png")
    return written
