"""Whole-stack inference: read, predict and write one slice at a time; safe loading of weights."""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from emseg.data.stream import open_slices

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
    slices: Iterable[np.ndarray],
    network: torch.nn.Module,
    inferer: Callable,
    transform: Callable | None = None,
    postprocessing: Callable | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[np.ndarray]:
    """Yield the postprocessed network output, float32 (C, H, W), for each (H, W) slice of ``slices``."""
    network.eval()
    total = len(slices) if hasattr(slices, "__len__") else "?"
    for index, image in enumerate(slices):
        start = time.perf_counter()
        x = torch.as_tensor(np.asarray(image, dtype=np.float32)[None])
        if transform is not None:
            x = torch.as_tensor(transform(x))
        with torch.inference_mode():
            logits = inferer(x[None].to(device), network)
            if isinstance(logits, (list, tuple)):  # deep supervision: the last head is the final output
                logits = logits[-1]
            output = postprocessing(logits[0]) if postprocessing is not None else logits[0]
        logger.info("slice %d/%s predicted in %.2fs", index + 1, total, time.perf_counter() - start)
        yield output.detach().float().cpu().numpy()


OUTPUTS = ("probability", "mask", "probabilities")


def _select(output: np.ndarray, kind: str, channel: int) -> np.ndarray:
    if kind == "probability":
        if not 0 <= channel < output.shape[0]:
            raise ValueError(f"channel {channel} requested but the network gives {output.shape[0]} channels")
        return output[channel]
    if kind == "mask":
        if output.shape[0] > 255:
            raise ValueError(f"{output.shape[0]} classes do not fit a uint8 class map")
        return output.argmax(0).astype(np.uint8)
    return output


def segment_stack(
    network: torch.nn.Module,
    inferer: Callable,
    input_path: str | Path,
    output_path: str | Path,
    output: str = "probability",
    output_format: str = "tiff",
    channel: int = 1,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    probabilities_path: str | Path | None = None,
    input_key: str | None = None,
    transform: Callable | None = None,
    postprocessing: Callable | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Segment every slice of ``input_path`` (any format :func:`emseg.data.stream.open_slices` reads),
    reading, predicting and writing one slice at a time.

    Args:
        output: ``probability`` (float32 map of ``channel``; for ISBI bundles 1 = interior, the submission
            format), ``mask`` (uint8 class index of the argmax: binary 0/1 or multi-class) or
            ``probabilities`` (float32 (Z, C, H, W), TIFF only).
        output_format: ``tiff``, ``png`` (folder of slices, masks only) or ``nifti`` (``.nii`` with ``spacing``
            (z, y, x), micrometres).
        probabilities_path: also write every class's probability to this TIFF (Z, C, H, W).
    """
    from emseg.writers import stack_writer

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    dtype = "uint8" if output == "mask" else "float32"
    if output_format == "png" and output != "mask":
        raise ValueError("PNG slices hold masks: use output 'mask' with output_format 'png'")
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_slices(input_path, input_key))
        main = stack.enter_context(stack_writer(output_format, output_path, dtype, source.shape, len(source), spacing))
        channels = stack.enter_context(stack_writer("tiff", probabilities_path)) if probabilities_path else None
        for result in predict_slices(source, network, inferer, transform, postprocessing, device):
            main.write(_select(result, output, channel))
            if channels is not None:
                channels.write(result)
    logger.info("wrote %s (%d slices, %s)%s", output_path, len(source), output,
                f" and {probabilities_path} (per-class probabilities)" if probabilities_path else "")
    return Path(output_path)
