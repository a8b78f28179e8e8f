"""What every emseg widget shares: a layer's pixels and pixel size, class names carried by labels layers, and errors
shown in the viewer as one message (never a traceback dialog)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from napari.utils.notifications import show_error
from superqt.utils import create_worker

logger = logging.getLogger(__name__)

CLASS_NAMES = "class_names"  # labels-layer metadata: value v is class_names[v - 1]; 0 is unlabelled


def full_resolution(layer) -> object:
    """The full-resolution data of an image or labels layer (the first level of a multiscale one)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def layer_spacing(layer) -> tuple[float, ...]:
    """(z, y, x) pixel size of ``layer`` in micrometres (its scale; 1 where none was given)."""
    scale = tuple(float(s) for s in layer.scale)
    return (1.0,) * (3 - len(scale)) + scale[-3:]


def as_stack(data) -> np.ndarray | object:
    """A (Z, H, W) view of a layer's data (a 2-D image is one slice); dask arrays stay lazy."""
    return data[None] if data.ndim == 2 else data


def class_names_of(layer) -> list[str] | None:
    names = layer.metadata.get(CLASS_NAMES) if layer is not None else None
    return [str(n) for n in names] if names else None


def report(error: BaseException, action: str) -> str:
    """Show ``error`` in the viewer as one line (``action: message``) and log it; returns the line."""
    text = " ".join(str(error).split()) or type(error).__name__
    line = f"{action}: {text}"
    logger.error(line)
    show_error(line)
    return line


def background(function: Callable, *args, action: str, status, yielded: Callable, finished: Callable):
    """A worker (not yet started) running the generator ``function(*args)`` in a thread: each value it yields goes
    to ``yielded`` in the viewer's thread, an error to :func:`report` and the ``status`` label (superqt's worker,
    not napari's, whose error relay would also raise the traceback in the viewer), the end to ``finished``."""
    return create_worker(function, *args, _start_thread=False,
                         _connect={"errored": lambda error: setattr(status, "value", report(error, action)),
                                   "yielded": yielded, "finished": finished})
