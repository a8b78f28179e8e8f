"""Whole-stack inference: read, predict and write one slice at a time, reading ahead and writing behind;
:class:`Predictor`, any shared model (:func:`emseg.engine.trained.open_model`) ready to predict slices held in
memory (the napari plugin)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import NormalizeIntensity

from emseg.engine.precision import prepare_network
from emseg.engine.progress import progress, shows_bars
from emseg.engine.trained import TrainedModel, open_model
from emseg.engine.windows import SliceInferer
from emseg.errors import require_flag
from emseg.io import open_slices, output_suffix, stack_writer
from emseg.io.overlap import WriteBehind, read_ahead
from emseg.io.safety import check_not_an_input
from emseg.networks import final_output
from emseg.segmentation import InstanceParams, InstanceSegmenter
from emseg.visualize import class_palette

logger = logging.getLogger(__name__)


BATCH_PIXELS = 2048 * 2048  # pixels of slices predicted together on a GPU (what one 2048x2048 slice takes)
MAX_BATCH = 16


def slices_per_call(device: str | torch.device, shape: Sequence[int]) -> int:
    """How many slices of ``shape`` (H, W) one call of the network predicts: one on the CPU, where a call is
    compute-bound and larger batches only cost memory; on a GPU as many as :data:`BATCH_PIXELS` holds (16 of
    512x512, 4 of 1024x1024, one of 2048x2048), at most :data:`MAX_BATCH`, so that the device is not left waiting
    between small calls."""
    if torch.device(device).type == "cpu":
        return 1
    return int(max(1, min(MAX_BATCH, BATCH_PIXELS // max(1, int(np.prod(shape))))))


def _groups(slices: Iterable[np.ndarray], device) -> Iterator[list[np.ndarray]]:
    """Consecutive slices of one shape, as many together as :func:`slices_per_call` says."""
    group: list[np.ndarray] = []
    for image in slices:
        image = np.asarray(image)
        if group and (image.shape != group[0].shape or len(group) >= slices_per_call(device, group[0].shape)):
            yield group
            group = []
        group.append(image)
    if group:
        yield group


def predict_slices(
    slices: Iterable[np.ndarray],
    network: torch.nn.Module,
    inferer: Callable,
    transform: Callable | None = None,
    postprocessing: Callable | None = None,
    device: str | torch.device = "cpu",
    total: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the postprocessed network output, float32 (C, H, W), for each (H, W) slice of ``slices`` (``total``
    of them, for the progress bar, where ``slices`` has no length), in order; on a GPU several slices of one shape
    go through the network together (:func:`slices_per_call`) and come back to the host in one copy."""
    network.eval()
    total = len(slices) if hasattr(slices, "__len__") else total
    done = 0
    for group in _groups(progress(slices, "inference", total), device):
        start = time.perf_counter()
        images = []
        for image in group:
            x = torch.as_tensor(np.asarray(image, dtype=np.float32)[None])
            images.append(torch.as_tensor(transform(x)) if transform is not None else x)
        with torch.inference_mode():
            logits = final_output(inferer(torch.stack(images).to(device), network))
            outputs = [postprocessing(item) if postprocessing is not None else item for item in logits]
            outputs = torch.stack(outputs).detach().float().cpu().numpy()
        done += len(group)
        logger.log(logging.DEBUG if shows_bars() else logging.INFO, "slice%s %s/%s predicted in %.2fs",
                   "s" if len(group) > 1 else "", f"{done - len(group) + 1}-{done}" if len(group) > 1 else done,
                   total or "?", time.perf_counter() - start)
        yield from outputs


OUTPUTS = ("probability", "mask", "probabilities", "instances")
DTYPES = {"mask": "uint8", "instances": "uint32"}


def _select(output: np.ndarray, kind: str, channel: int) -> np.ndarray:
    if kind in ("probability", "instances"):
        if not 0 <= channel < output.shape[0]:
            raise ValueError(f"channel {channel} requested but the network gives {output.shape[0]} channels")
        return output[channel]
    if kind == "mask":
        if output.shape[0] > 255:
            raise ValueError(f"{output.shape[0]} classes do not fit a uint8 class map")
        return output.argmax(0).astype(np.uint8)
    return output


def check_output(output: str, output_format: str = "tiff", has_interior: bool = True) -> None:
    """Refuse at start an ``output`` that cannot be made: instances need a cell-interior class (``has_interior``: a
    membrane data set), and PNG slices hold uint8 masks only."""
    if output not in OUTPUTS:
        raise ValueError(f"output: {output!r} is not one of {OUTPUTS}")
    if output == "instances" and not has_interior:
        raise ValueError("output: 'instances' are made from cell-interior probabilities, and this bundle's data set "
                         "has no interior class; use output 'mask' (class index) instead")
    if output_format == "png" and output != "mask":
        raise ValueError(f"output_format: PNG slices hold masks; use output 'mask' with output_format 'png' "
                         f"(got output {output!r})")


DEFAULT_NAMES = {"probability": "probabilities", "mask": "classes", "probabilities": "class_probabilities",
                 "instances": "instances"}


def default_output_path(bundle_root: str | Path, output: str, output_format: str) -> str:
    """``<bundle_root>/eval/probabilities.tif`` for ``output`` probability, ``classes.tif`` for masks,
    ``class_probabilities.tif`` for all channels, ``instances.tif`` for cells (``.nii.gz`` for NIfTI, a folder for PNG slices)."""
    return str(Path(bundle_root) / "eval" / f"{DEFAULT_NAMES.get(output, output)}{output_suffix(output_format)}")


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
    overwrite: bool = False,
    instances: Mapping | None = None,
) -> Path:
    """Segment every slice of ``input_path`` (any format :func:`emseg.io.open_slices` reads),
    reading, predicting (on a GPU several slices per call: :func:`slices_per_call`) and writing slice by slice, the
    next slices read and the earlier ones written (and made
    into cells) on threads beside the prediction (:mod:`emseg.io.overlap`).

    Args:
        output: ``probability`` (float32 map of ``channel``; for ISBI bundles 1 = interior, the submission
            format), ``mask`` (uint8 class index of the argmax: binary 0/1 or multi-class),
            ``probabilities`` (float32 (Z, C, H, W), TIFF or zarr) or ``instances`` (uint32 cell labels made from
            ``channel``, the cell-interior probability, by :class:`emseg.segmentation.InstanceSegmenter`).
        output_format: ``tiff``, ``png`` (folder of slices, masks only), ``nifti`` (``.nii``/``.nii.gz``) or
            ``zarr`` (an OME-Zarr image, ``.zarr``); NIfTI and zarr carry ``spacing`` (z, y, x), micrometres.
        probabilities_path: also write every class's probability to this TIFF (Z, C, H, W).
        instances: parameters of :class:`emseg.segmentation.InstanceParams` (output ``instances``; default its own).
        overwrite: replace existing outputs (only files, or folders of emseg's own slices). An output that is,
            lies inside or contains the input is always refused.
    """
    require_flag(overwrite, "overwrite")
    check_output(output, output_format)
    dtype = DTYPES.get(output, "float32")
    segmenter = None
    if output == "instances":

        segmenter = InstanceSegmenter(InstanceParams.from_mapping(instances, "instances"))
    check_not_an_input(output_path, [input_path])
    if probabilities_path:
        check_not_an_input(probabilities_path, [input_path, output_path])
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_slices(input_path, input_key))
        main = stack.enter_context(stack_writer(output_format, output_path, dtype, source.shape, len(source), spacing,
                                                overwrite, class_palette() if output == "mask" else None))
        channels = (stack.enter_context(stack_writer("tiff", probabilities_path, "float32", source.shape, len(source),
                                                     spacing, overwrite))
                    if probabilities_path else None)
        behind = stack.enter_context(WriteBehind())  # left first: every write done before the writers publish

        def write(result: np.ndarray) -> None:
            selected = _select(result, output, channel)
            main.write(segmenter(selected) if segmenter is not None else selected)
            if channels is not None:
                channels.write(result)

        results = stack.enter_context(contextlib.closing(  # closed first: the reading thread ends before the source
            predict_slices(read_ahead(source), network, inferer, transform, postprocessing, device, len(source))))
        for result in results:
            behind.submit(write, result)
    logger.info("wrote %s (%d slices, %s)%s", output_path, len(source), output,
                f" and {probabilities_path} (per-class probabilities)" if probabilities_path else "")
    return Path(output_path)


# --- any shared model, for slices in memory ----------------------------------------------------------------------
INFERENCE_KEYS = ("patch_size", "overlap", "instances")  # read from a bundle's inference.json when they are values


def _bundle_inference(folder: Path) -> dict:
    """The literal values of :data:`INFERENCE_KEYS` in ``folder/configs/inference.json`` (a bundle), else {}."""
    config = folder / "configs" / "inference.json"
    if not config.is_file():
        return {}
    values = json.loads(config.read_text())
    return {key: values[key] for key in INFERENCE_KEYS if key in values and not str(values[key]).startswith(("$", "@"))}


@dataclass
class Predictor:
    """A trained model ready to predict: the network with its weights on ``device``, the bundles' preprocessing
    (intensity normalisation per slice), windows of ``patch_size`` (the whole slice when it fits) and softmax.

    ``class_names`` and ``interior_class`` come with the weights (``interior``: the cell-interior class of a
    membrane model, from which cells are made); ``instances`` are the watershed parameters of the bundle's
    ``inference.json`` when the model is a bundle folder, else :class:`InstanceParams`' defaults."""

    model: TrainedModel
    network: torch.nn.Module
    device: torch.device
    patch_size: Sequence[int] = (256, 256)
    overlap: float = 0.5
    instances: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names or [f"class_{i}" for i in range(self.num_classes)]

    @property
    def num_classes(self) -> int:
        return int(self.model.network_def.get("out_channels") or self.model.network_def.get("num_classes"))

    @property
    def interior_class(self) -> int | None:
        names = self.model.class_names or []
        continued = self.model.record.get("class_map") or {}  # a fine-tuned model: which parent class each continues
        found = [i for i, name in enumerate(names) if "interior" in (name, continued.get(name))]
        return found[0] if found else None

    def outputs(self) -> tuple[str, ...]:
        """What this model can give: every class's probability, the class mask, and cells for a membrane model."""
        return ("probabilities", "mask", *(("instances",) if self.interior_class is not None else ()))

    def predict(self, slices: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """float32 (C, H, W) class probabilities of each (H, W) slice, one slice at a time."""
        inferer = SliceInferer(roi_size=list(self.patch_size), overlap=self.overlap, mode="gaussian",
                               sw_batch_size=4, sw_device=self.device)
        return predict_slices(slices, self.network, inferer, NormalizeIntensity(),
                              lambda logits: torch.softmax(logits.float(), 0), self.device)

    def segmenter(self) -> InstanceSegmenter:
        """Cells from this model's cell-interior probabilities (membrane models only)."""
        if self.interior_class is None:
            raise ValueError(f"{self.model.source}: cells are made from cell-interior probabilities, and this "
                             f"model's classes {self.class_names} have no 'interior'; choose the mask instead")
        return InstanceSegmenter(InstanceParams.from_mapping(self.instances, "instances"))


def open_predictor(source: str | Path, device: str | torch.device | None = None,
                   tracking_uri: str | None = None) -> Predictor:
    """A :class:`Predictor` of the model at ``source``: a bundle folder, run folder, weights file, packed bundle,
    bioimage.io package or ``models:/NAME/VERSION`` (with ``tracking_uri``)."""
    model = open_model(source, tracking_uri)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    network = prepare_network(model.build(), device)
    settings = {"patch_size": model.record["patch_size"]} if model.record.get("patch_size") else {}
    settings.update(_bundle_inference(Path(str(source))) if Path(str(source)).is_dir() else {})
    return Predictor(model, network, device, **settings)
