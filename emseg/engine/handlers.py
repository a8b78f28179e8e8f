"""Ignite handlers that MONAI lacks: validation overlays, validation from a given epoch on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

from emseg.engine.offline import run_id_of, shared_client
from emseg.engine.runs import RunFolder, weights_record
from emseg.networks import load_weights_with_digest
from emseg.visualize import class_overlay_image, with_titles


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


class ValidationOverlay:
    """Save an overlay of the first validation slice's prediction at the end of each evaluation.

    Writes ``output_dir/overlays/epoch_NNN.png`` and keeps the latest as ``output_dir/validation_overlay.png``
    (and, given ``tracking_uri`` and a training ``run_dir``, logs it as an MLflow image at the epoch's step):
    image, predicted and true classes in colour, errors in red (:func:`emseg.visualize.class_overlay_image`), each
    panel named above it and the picture stamped with ``stamp`` (default: "epoch N", the training epoch).
    Expects one-hot ``pred``/``label`` as the bundles' postprocessing gives; ``hidden_class`` is left grey.
    """

    def __init__(self, output_dir: str, hidden_class: int = 0, image_key: str = "image",
                 tracking_uri: str | None = None, run_dir: str | None = None, stamp: str | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.stamp = stamp
        self.hidden_class = hidden_class
        self.image_key = image_key
        self.tracking_uri, self.run_dir = tracking_uri, run_dir
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
        picture = with_titles(self.picture(self._sample), stamp=self.stamp or f"epoch {engine.state.epoch}")
        target = self.output_dir / "overlays" / f"epoch_{engine.state.epoch:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target)
        shutil.copyfile(target, self.output_dir / "validation_overlay.png")
        self._log_image(picture, engine.state.epoch)

    def _log_image(self, picture: np.ndarray, epoch: int) -> None:
        """The overlay as an MLflow image of the training run (``run_dir``'s), at step ``epoch``: the UI's image
        grid shows it per epoch."""
        if not (self.tracking_uri and self.run_dir):
            return
        run_id = run_id_of(RunFolder(self.run_dir).record())
        if run_id:  # the training's client: offline when the server is away
            shared_client(self.tracking_uri).log_image(run_id, picture, key="validation_overlay", step=int(epoch))

    def picture(self, sample: dict) -> np.ndarray:
        """The RGB overlay of one sample (``image``, one-hot ``pred`` and ``label``)."""
        label = sample.get("label")
        return class_overlay_image(sample[self.image_key][0], sample["pred"].argmax(0),
                                   None if label is None else label.argmax(0), self.hidden_class)


class ValidationFromEpoch(ValidationHandler):
    """MONAI's epoch-level ValidationHandler that starts validating at ``start_epoch``.

    Validates every ``interval`` epochs from ``start_epoch`` on, and always after the
    last epoch. Keeps checkpoint selection away from the first epochs, whose V_rand on
    a few validation slices can be high by chance (thick, conservative membranes).
    """

    every_rank = True  # under torchrun every rank runs it (emseg.engine.distributed.handlers_of_rank)

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


class LoadWeights:
    """Load ``network``'s weights from ``path`` when the engine starts (as tensors only) and record which:
    ``engine.state.weights`` gets the file, the sha256 of the bytes loaded and what was saved with them
    (the run or promoted model's record), so a report can say exactly what it scored."""

    def __init__(self, path: str, network: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        self.path, self.network, self.device = path, network, device

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:

        _, digest = load_weights_with_digest(self.network, self.path, self.device)
        engine.state.weights = {"path": str(self.path), "sha256": digest, "record": weights_record(self.path)}
