"""Whole-volume inference: read a stack, predict slice by slice, write a probability TIFF."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from emseg.data.io import VolumeError, read_volume

logger = logging.getLogger(__name__)


def load_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Load network weights from ``path`` without executing pickled code.

    Accepts a plain state dict (``models/model.pt``) or a training checkpoint with
    a ``model`` entry. A file that needs arbitrary code to load is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint; train the bundle first or set ckpt_path")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused, the checkpoint holds objects other than tensors ({err})") from err
    except RuntimeError as err:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_weights(network: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``network`` with the weights from ``path`` loaded (strictly) and switched to eval mode."""
    try:
        network.load_state_dict(load_state_dict(path, device))
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the network in the config ({err})") from err
    return network.eval()


def predict_slices(
    volume: np.ndarray,
    network: torch.nn.Module,
    inferer: Callable,
    transform: Callable | None = None,
    postprocessing: Callable | None = None,
    channel: int | None = 1,
    device: str | torch.device = "cpu",
) -> Iterator[np.ndarray]:
    """Yield one float32 (H, W) map per slice of a (Z, H, W) volume: ``channel`` of the postprocessed output
    (all channels, (C, H, W), when ``channel`` is None)."""
    network.eval()
    for index, image in enumerate(volume):
        start = time.perf_counter()
        x = torch.as_tensor(image[None].astype(np.float32))
        if transform is not None:
            x = torch.as_tensor(transform(x))
        with torch.inference_mode():
            logits = inferer(x[None].to(device), network)
            if isinstance(logits, (list, tuple)):  # deep supervision: the last head is the final output
                logits = logits[-1]
            output = postprocessing(logits[0]) if postprocessing is not None else logits[0]
        if channel is not None and not 0 <= channel < output.shape[0]:
            raise ValueError(f"channel {channel} requested but the network gives {output.shape[0]} channels")
        logger.info("slice %d/%d predicted in %.2fs", index + 1, len(volume), time.perf_counter() - start)
        selected = output if channel is None else output[channel]
        yield selected.detach().float().cpu().numpy()


def predict_volume(
    network: torch.nn.Module,
    inferer: Callable,
    input_path: str | Path,
    output_path: str | Path,
    input_key: str | None = None,
    transform: Callable | None = None,
    postprocessing: Callable | None = None,
    channel: int = 1,
    device: str | torch.device = "cpu",
) -> Path:
    """Predict every slice of ``input_path`` and write a float32 (Z, H, W) TIFF stack to ``output_path``.

    Slices are written as they are predicted; the file appears under its final
    name only once complete, so an interrupted run leaves no truncated output.
    """
    import tifffile

    volume = read_volume(input_path, input_key)
    output_path = Path(output_path)
    if output_path.suffix.lower() not in (".tif", ".tiff"):
        raise VolumeError(f"{output_path}: the probability stack is written as TIFF (.tif)")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".part")
    pages = predict_slices(volume, network, inferer, transform, postprocessing, channel, device)
    try:
        with tifffile.TiffWriter(partial, imagej=True) as tif:
            tif.write(pages, shape=volume.shape, dtype=np.float32, metadata={"axes": "ZYX"})
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("wrote %s (%d slices, float32 probabilities of channel %d)", output_path, len(volume), channel)
    return output_path


@contextlib.contextmanager
def atomic_tiff(path: str | Path) -> Iterator:
    """A ``tifffile.TiffWriter`` on ``path.part`` that becomes ``path`` only when the block completes."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise VolumeError(f"{path}: the stack is written as TIFF (.tif)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with tifffile.TiffWriter(partial) as tif:
            yield tif
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def predict_classes(
    network: torch.nn.Module,
    inferer: Callable,
    input_path: str | Path,
    output_path: str | Path,
    probabilities_path: str | Path | None = None,
    input_key: str | None = None,
    transform: Callable | None = None,
    postprocessing: Callable | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Predict every slice of ``input_path``; write the class-index map (argmax) as a uint8 (Z, H, W) TIFF
    to ``output_path`` and, when ``probabilities_path`` is given, the per-class probabilities as a
    float32 (Z, C, H, W) TIFF. Slices are written as they are predicted, each file atomically."""
    volume = read_volume(input_path, input_key)
    with contextlib.ExitStack() as stack:
        labels = stack.enter_context(atomic_tiff(output_path))
        probabilities = stack.enter_context(atomic_tiff(probabilities_path)) if probabilities_path else None
        for output in predict_slices(volume, network, inferer, transform, postprocessing, None, device):
            if output.shape[0] > 255:
                raise ValueError(f"{output.shape[0]} classes do not fit a uint8 class map")
            labels.write(output.argmax(0).astype(np.uint8), contiguous=True, metadata={"axes": "ZYX"})
            if probabilities is not None:
                probabilities.write(output.astype(np.float32), contiguous=True, metadata={"axes": "ZCYX"})
    logger.info("wrote %s (%d slices, class indices)%s", output_path, len(volume),
                f" and {probabilities_path} (per-class probabilities)" if probabilities_path else "")
    return Path(output_path)
