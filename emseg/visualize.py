"""Pictures of images, predictions and labels: contrast stretching and class overlays."""

from __future__ import annotations

import numpy as np

# colours of class indices 1..8 (index 0 of the table is never drawn: see class_overlay_image)
CLASS_COLOURS = np.array([(0, 0, 0), (255, 215, 0), (0, 200, 255), (255, 60, 60), (60, 220, 60), (200, 80, 255),
                          (255, 140, 0), (0, 120, 255), (255, 255, 255)], dtype=np.float32)
ERROR_COLOUR = (255, 0, 0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Contrast-stretch a 2-D image (0.5-99.5 percentiles) to uint8 for display."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def class_palette() -> np.ndarray:
    """(256, 3) uint8 colours of a class-index map for viewers (an ImageJ LUT, a PNG palette): 0 black, class
    ``k`` >= 1 the overlays' ``CLASS_COLOURS[k]``, repeating after 8."""
    index = np.arange(256)
    return CLASS_COLOURS[np.where(index == 0, 0, (index - 1) % (len(CLASS_COLOURS) - 1) + 1)].astype(np.uint8)


def paint_classes(grey: np.ndarray, classes: np.ndarray, hidden_class: int = 0, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 of a uint8 grey image with every class but ``hidden_class`` blended in its colour.

    Class ``k`` gets ``CLASS_COLOURS[k]`` (``CLASS_COLOURS[1]`` for the only drawn class of a binary map).
    """
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    classes = np.asarray(classes).astype(np.int64)
    mask = classes != hidden_class
    colour_index = np.where(classes > hidden_class, classes, classes + 1) % len(CLASS_COLOURS)
    colour_index[colour_index == 0] = 1
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * CLASS_COLOURS[colour_index[mask]]
    return rgb.astype(np.uint8)


def class_overlay_image(image: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None,
                        hidden_class: int = 0) -> np.ndarray:
    """RGB panels ``image | predicted classes | true classes | errors`` (H, 2W or 4W, 3), uint8.

    ``pred`` and ``label`` are 2-D class-index maps; every class but ``hidden_class`` (the background, or the
    cell interior of a membrane task) is drawn in colour. The error panel marks pixels whose predicted class
    is wrong in red on the darkened image.
    """
    grey = to_uint8(image)
    panels = [np.repeat(grey[..., None], 3, axis=-1), paint_classes(grey, pred, hidden_class)]
    if label is not None:
        errors = np.repeat((grey // 3)[..., None], 3, axis=-1)
        errors[np.asarray(pred) != np.asarray(label)] = ERROR_COLOUR
        panels += [paint_classes(grey, label, hidden_class), errors]
    return np.concatenate(panels, axis=1)


PANEL_TITLES = ("image", "prediction", "ground truth", "errors (red)")
TITLE_HEIGHT = 20


def with_titles(picture: np.ndarray, titles: tuple[str, ...] = PANEL_TITLES, stamp: str | None = None) -> np.ndarray:
    """``picture`` (panels side by side, as :func:`class_overlay_image` makes them) under a black strip that names
    each panel (the first ``len(panels)`` of ``titles``) and, at the right end, ``stamp`` (e.g. "epoch 58")."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = picture.shape[:2]
    panels = max(1, round(width / height)) if height else 1
    strip = Image.new("RGB", (width, TITLE_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    try:
        font = ImageFont.load_default(size=14)  # Pillow's own scalable font (needs FreeType)
    except (TypeError, ValueError, OSError, ImportError):
        font = ImageFont.load_default()
    for index, title in enumerate(titles[:panels]):
        draw.text((index * width // panels + 4, 2), title, fill=(255, 255, 255), font=font)
    if stamp:
        right = draw.textbbox((0, 0), stamp, font=font)[2]
        draw.text((width - right - 4, 2), stamp, fill=(255, 215, 0), font=font)
    return np.concatenate([np.asarray(strip, dtype=np.uint8), picture], axis=0)
