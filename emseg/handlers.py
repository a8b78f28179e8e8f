"""Ignite handlers that MONAI lacks: validation overlays (binary and multi-class), validation from a given epoch on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

from emseg.visualize import to_uint8


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def overlay_image(image: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
    """RGB panels ``image | image with predicted membrane | errors`` (H, 2W or 3W, 3), uint8.

    ``pred`` and ``label`` are 2-D membrane masks (1 = membrane). In the error
    panel, green marks agreement on membrane, red false membrane, blue missed membrane.
    """
    grey = to_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    predicted = rgb.copy()
    predicted[pred > 0] = (0.5 * predicted[pred > 0] + [127, 0, 0]).astype(np.uint8)
    panels = [rgb, predicted]
    if label is not None:
        errors = (rgb // 3).astype(np.uint8)
        errors[(pred > 0) & (label > 0)] = [0, 200, 0]
        errors[(pred > 0) & (label == 0)] = [255, 0, 0]
        errors[(pred == 0) & (label > 0)] = [0, 80, 255]
        panels.append(errors)
    return np.concatenate(panels, axis=1)


class ValidationOverlay:
    """Save an overlay of the first validation slice's prediction at the end of each evaluation.

    Writes ``output_dir/overlays/epoch_NNN.png`` and keeps the latest as
    ``output_dir/validation_overlay.png``. Expects one-hot ``pred``/``label`` with
    the membrane in channel ``membrane_channel``, as the bundles' postprocessing gives.
    """

    def __init__(self, output_dir: str, membrane_channel: int = 0, image_key: str = "image") -> None:
        self.output_dir = Path(output_dir)
        self.membrane_channel = membrane_channel
        self.image_key = image_key
        self._sample: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._capture)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def _reset(self, engine: Engine) -> None:
        self._sample = None

    def _capture(self, engine: Engine) -> None:
        if self._sample is None and engine.state.output:
            first = engine.state.output[0]
            self._sample = {k: _to_numpy(first[k]) for k in (self.image_key, "pred", "label") if k in first}

    def _save(self, engine: Engine) -> None:
        from PIL import Image

        if not self._sample:
            return
        picture = self.picture(self._sample)
        target = self.output_dir / "overlays" / f"epoch_{engine.state.epoch:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target)
        shutil.copyfile(target, self.output_dir / "validation_overlay.png")


    def picture(self, sample: dict) -> np.ndarray:
        """The RGB overlay of one sample (``image``, one-hot ``pred`` and ``label``)."""
        c = self.membrane_channel
        label = sample.get("label")
        return overlay_image(sample[self.image_key][0], sample["pred"][c], None if label is None else label[c])


# background (not drawn), then distinct colours for up to 8 classes
CLASS_COLOURS = np.array([(0, 0, 0), (255, 215, 0), (0, 200, 255), (255, 60, 60), (60, 220, 60), (200, 80, 255),
                          (255, 140, 0), (0, 120, 255), (255, 255, 255)], dtype=np.float32)


def class_overlay_image(image: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None,
                        alpha: float = 0.5) -> np.ndarray:
    """RGB panels ``image | predicted classes | true classes`` (H, 2W or 3W, 3), uint8.

    ``pred`` and ``label`` are 2-D class-index maps; class ``k`` > 0 is blended in
    ``CLASS_COLOURS[k]``, background is left grey.
    """
    grey = np.repeat(to_uint8(image)[..., None], 3, axis=-1).astype(np.float32)

    def paint(classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes).astype(np.int64) % len(CLASS_COLOURS)
        out = grey.copy()
        mask = classes > 0
        out[mask] = (1 - alpha) * grey[mask] + alpha * CLASS_COLOURS[classes[mask]]
        return out.astype(np.uint8)

    panels = [grey.astype(np.uint8), paint(pred)] + ([] if label is None else [paint(label)])
    return np.concatenate(panels, axis=1)


class ClassOverlay(ValidationOverlay):
    """:class:`ValidationOverlay` for multi-class output: image, predicted and true classes in colour."""

    def __init__(self, output_dir: str, image_key: str = "image") -> None:
        super().__init__(output_dir, image_key=image_key)

    def picture(self, sample: dict) -> np.ndarray:
        label = sample.get("label")
        return class_overlay_image(sample[self.image_key][0], sample["pred"].argmax(0),
                                   None if label is None else label.argmax(0))


class ValidationFromEpoch(ValidationHandler):
    """MONAI's epoch-level ValidationHandler that starts validating at ``start_epoch``.

    Validates every ``interval`` epochs from ``start_epoch`` on, and always after the
    last epoch. Keeps checkpoint selection away from the first epochs, whose V_rand on
    a few validation slices can be high by chance (thick, conservative membranes).
    """

    def __init__(self, validator, interval: int, start_epoch: int = 1) -> None:
        super().__init__(validator=validator, interval=interval, epoch_level=True)
        self.start_epoch = max(1, int(start_epoch))

    def _due(self, engine: Engine, epoch: int) -> bool:
        return epoch >= self.start_epoch and (
            (epoch - self.start_epoch) % self.interval == 0 or epoch == engine.state.max_epochs
        )

    def attach(self, engine: Engine) -> None:
        if self.validator is None:
            raise RuntimeError("please set validator in __init__() or call `set_validator()` before training.")
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self)
