"""bioimage.io model packages of a bundle's weights, for ilastik, deepImageJ (Fiji), napari and QuPath.

:func:`export_bioimageio` writes one zip per the bioimage.io model spec 0.5 (``bioimageio.spec``): the bundle's
metadata (name, description, authors, citations with DOI or arXiv link, licence, its docs), a cover made from a real
prediction, the input (batch, channel, y, x with the pixel size) with per-slice zero-mean unit-variance
normalisation, the output (one softmax probability per class), test tensors from a real slice, the training data
set, and the weights twice: a PyTorch state dict with its architecture (MONAI's or emseg's class and arguments)
and TorchScript (traced), which needs neither. ``config.emseg`` says which run made the weights and what they
scored, as the packed MONAI bundle does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from emseg.bundle.pack import BundleError, provenance
from emseg.data import default_dataset_dir, get_dataset, test_images, voxel_spacing
from emseg.engine.paths import project_root
from emseg.engine.registry import network_from_record
from emseg.engine.runs import weights_record
from emseg.io import open_slices
from emseg.io.files import sha256
from emseg.networks import final_output
from emseg.visualize import paint_classes, to_uint8

logger = logging.getLogger(__name__)

TEST_SIZE = 256  # test tensors: a centre crop of this size (smaller slices: the largest multiple of STEP)
STEP = 32  # every bundle network takes heights and widths in multiples of 32
EPS = 1e-6  # bioimage.io's zero_mean_unit_variance epsilon, used for the test output too

def citation(reference: str, source: Path):
    """A bioimage.io citation of one ``references`` entry of metadata.json: its ``doi:`` or ``arXiv:`` id."""
    from bioimageio.spec.model.v0_5 import CiteEntry

    doi = re.search(r"doi:\s*(10\.\S+?)\.?(\s|$)", reference)
    if doi:
        return CiteEntry(text=reference, doi=doi.group(1))
    arxiv = re.search(r"arXiv:\s*(\d{4}\.\d{4,5})", reference)
    if arxiv:
        return CiteEntry(text=reference, url=f"https://arxiv.org/abs/{arxiv.group(1)}")
    raise BundleError(f"{source}: reference {reference[:60]!r}... has no 'doi:' or 'arXiv:' id; bioimage.io needs one "
                      f"for every citation: add it to the reference")


def _licence(bundle_dir: Path):
    from bioimageio.spec.model.v0_5 import FileDescr

    text = (bundle_dir / "LICENSE").read_text()
    if "Apache License" in text and "Version 2.0" in text:
        return "Apache-2.0"
    return FileDescr(source=bundle_dir / "LICENSE")


def _test_slice(image: str | Path) -> np.ndarray:
    """The first slice of ``image`` cut to a centre square of :data:`TEST_SIZE` (or the largest multiple of 32)."""

    with open_slices(image) as source:
        picture = np.asarray(source[0], dtype=np.float32)
    size = min(TEST_SIZE, *(s // STEP * STEP for s in picture.shape))
    if size < 2 * STEP:
        raise BundleError(f"{image}: the first slice is {picture.shape}; test tensors need at least {2 * STEP} pixels "
                          f"each way")
    top, left = (picture.shape[0] - size) // 2, (picture.shape[1] - size) // 2
    return picture[top:top + size, left:left + size]


class _FinalOutput(torch.nn.Module):
    """A network whose output is its final tensor (deep-supervision networks give a list), for tracing."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return final_output(self.network(x))


def _cover(raw: np.ndarray, probabilities: np.ndarray, hidden_class: int, path: Path) -> None:
    """Input and predicted classes side by side (2:1, as bioimage.io recommends)."""
    from PIL import Image


    grey = to_uint8(raw)
    painted = paint_classes(grey, probabilities.argmax(0), hidden_class)
    Image.fromarray(np.concatenate([np.repeat(grey[..., None], 3, axis=-1), painted], axis=1)).save(path)


def export_bioimageio(bundle_dir: str | Path, output: str | Path, image: str | Path | None = None,
                      dataset_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the bioimage.io model package of ``bundle_dir``'s promoted model to ``output`` (a ``.zip``).

    The test tensors and the cover come from the first slice of ``image`` (default: the data set's test images
    under ``dataset_dir``, by default the project's ``data/`` folder). The zip is written beside ``output`` and
    renamed when complete; an existing ``output`` is replaced only with ``overwrite``.
    """

    bundle_dir, output = Path(bundle_dir).resolve(), Path(output)
    weights = bundle_dir / "models" / "model.pt"
    meta_file = bundle_dir / "configs" / "metadata.json"
    for required in (meta_file, bundle_dir / "LICENSE", bundle_dir / "docs" / "README.md", weights):
        if not required.is_file():
            raise BundleError(f"{required}: missing, cannot export {bundle_dir}" +
                              (" (train the bundle or promote a run first)" if required == weights else ""))
    if output.suffix != ".zip":
        raise BundleError(f"{output}: a bioimage.io package is a .zip; name the output *.zip")
    if (output.exists() or output.is_symlink()) and not (overwrite and output.is_file()):
        raise BundleError(f"{output}: exists; choose another name" + ("" if output.is_dir() else
                                                                       " or pass --overwrite to replace it"))
    record, meta = weights_record(weights), json.loads(meta_file.read_text())
    digest = sha256(weights)
    if record.get("weights_sha256", digest) != digest:
        raise BundleError(f"{weights}: models/model.json describes other weights; promote the run again")
    dataset = record.get("dataset")
    if not dataset or not record.get("network"):
        raise BundleError(f"{weights}: models/model.json does not say what the weights were trained as (data set, "
                          f"network); promote the run that made them (emseg bundle promote)")
    class_names = list(record.get("class_names") or [])
    spacing = voxel_spacing(dataset)
    if image is None:
        image = test_images(dataset, dataset_dir or default_dataset_dir(dataset, project_root(bundle_dir)))
        if not Path(image).exists():
            raise BundleError(f"{image}: missing; the test tensors need one real slice: pass --image STACK (or "
                              f"--dataset-dir where the data set is)")
    raw = _test_slice(image)
    network = network_from_record(record, weights).float().eval()
    with torch.no_grad():  # not inference_mode: the same tensor is traced below
        x = torch.from_numpy(raw)[None, None]
        normalised = (x - x.mean()) / (x.std(unbiased=False) + EPS)
        probabilities = torch.softmax(_FinalOutput(network)(normalised), dim=1)
    if len(class_names) != probabilities.shape[1]:
        class_names = [f"class{i}" for i in range(probabilities.shape[1])]
    eval_metrics, origin = provenance(bundle_dir, digest, record)
    interior = get_dataset(dataset).interior_class

    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.dataset.v0_3 import DatasetDescr
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromLibraryDescr,
        Author,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        FileDescr,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        ModelDescr,
        OutputTensorDescr,
        ParameterizedSize,
        PytorchStateDictWeightsDescr,
        SizeReference,
        SoftmaxDescr,
        SoftmaxKwargs,
        SpaceInputAxis,
        SpaceOutputAxis,
        TorchscriptWeightsDescr,
        WeightsDescr,
        ZeroMeanUnitVarianceDescr,
        ZeroMeanUnitVarianceKwargs,
    )

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        np.save(root / "test_input.npy", raw[None, None])
        np.save(root / "test_output.npy", probabilities.numpy())
        _cover(raw, probabilities[0].numpy(), 0 if interior is None else interior, root / "cover.png")
        torch.save(network.state_dict(), root / "weights.pt")
        with torch.no_grad(), warnings.catch_warnings():
            # shape checks (BasicUNet pads odd sizes) are constants in the trace: true for every multiple of 32
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(_FinalOutput(network), normalised)
        traced.save(str(root / "weights.torchscript.pt"))
        kwargs = {k: v for k, v in dict(record["network"]).items() if not k.startswith("_")}
        space = dict(unit="micrometer")
        inputs = InputTensorDescr(
            id="raw", description="EM slice (grey values as acquired; normalised per slice by the preprocessing)",
            axes=[BatchAxis(), ChannelAxis(channel_names=["em"]),
                  SpaceInputAxis(id="y", size=ParameterizedSize(min=2 * STEP, step=STEP), scale=spacing[1], **space),
                  SpaceInputAxis(id="x", size=ParameterizedSize(min=2 * STEP, step=STEP), scale=spacing[2], **space)],
            test_tensor=FileDescr(source=root / "test_input.npy"), data=IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[ZeroMeanUnitVarianceDescr(kwargs=ZeroMeanUnitVarianceKwargs(
                axes=["channel", "y", "x"], eps=EPS))])
        outputs = OutputTensorDescr(
            id="probabilities", description=f"probability of each class: {', '.join(class_names)}",
            axes=[BatchAxis(), ChannelAxis(channel_names=class_names),
                  SpaceOutputAxis(id="y", size=SizeReference(tensor_id="raw", axis_id="y"), scale=spacing[1], **space),
                  SpaceOutputAxis(id="x", size=SizeReference(tensor_id="raw", axis_id="x"), scale=spacing[2], **space)],
            test_tensor=FileDescr(source=root / "test_output.npy"),
            data=IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[SoftmaxDescr(kwargs=SoftmaxKwargs(axis="channel"))])
        pytorch_version = torch.__version__.split("+")[0]
        data = get_dataset(dataset)
        model = ModelDescr(
            name=re.sub(r"[^A-Za-z0-9_+\- ()]", " ", meta.get("name", bundle_dir.name)).strip(),
            description=meta.get("description", ""),
            authors=[Author(name=meta.get("authors", "emseg developers"))],
            cite=[citation(reference, meta_file) for reference in meta.get("references", [])],
            license=_licence(bundle_dir),
            documentation=FileDescr(source=bundle_dir / "docs" / "README.md"),
            covers=[FileDescr(source=root / "cover.png")],
            inputs=[inputs], outputs=[outputs],
            tags=["electron-microscopy", "segmentation", "2d", "pytorch", "emseg", dataset],
            version=meta.get("version"),
            training_data=DatasetDescr(name=data.title, description=data.description,
                                       cite=[CiteEntry(text=t, doi=d) for t, d in data.citations])
            if data.citations else None,
            weights=WeightsDescr(
                pytorch_state_dict=PytorchStateDictWeightsDescr(
                    source=root / "weights.pt", pytorch_version=pytorch_version,
                    architecture=ArchitectureFromLibraryDescr(callable=type(network).__name__,
                                                              import_from=type(network).__module__, kwargs=kwargs)),
                torchscript=TorchscriptWeightsDescr(source=root / "weights.torchscript.pt", parent="pytorch_state_dict",
                                                    pytorch_version=pytorch_version)),
            config={"emseg": _plain({**origin, "eval_metrics": eval_metrics, "bundle": bundle_dir.name,
                                     "registered_model": record.get("registered_model"),
                                     "model_version": record.get("model_version")})},
        )
        partial = output.with_name(output.name + ".part")
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_bioimageio_package(model, output_path=partial)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    logger.info("wrote %s (bioimage.io model of run %s)", output, record.get("run_name"))
    return output


def _plain(value: Mapping) -> dict:
    """``value`` as plain JSON types (numbers, strings, lists, dicts) for the package's YAML."""
    return json.loads(json.dumps(value, default=str))


def validate_package(path: str | Path) -> str:
    """bioimage.io's own check of the package at ``path`` (format and files): the status, ``valid-format`` or
    ``passed`` when it is valid; anything else raises with the first error."""
    from bioimageio.spec import InvalidDescr, load_description

    description = load_description(str(path), perform_io_checks=True)
    if isinstance(description, InvalidDescr):
        errors = description.validation_summary.details[0].errors if description.validation_summary.details else []
        raise BundleError(f"{path}: not a valid bioimage.io package ({errors[0] if errors else 'invalid'})")
    return str(description.validation_summary.status)


def run_model_test(path: str | Path) -> str:
    """bioimageio.core's model test of the package at ``path`` (each weight format reproduces the test output and
    runs at other sizes and batch sizes): ``passed``, else raises with the first failed check."""
    from bioimageio.core import test_model

    summary = test_model(str(path))
    if summary.status != "passed":
        failed = next((d for d in summary.details if d.status == "failed"), None)
        reason = (failed.errors[0].msg if failed is not None and failed.errors else summary.status)
        raise BundleError(f"{path}: bioimageio.core's model test failed: {failed.name if failed else ''}: {reason}")
    return "passed"
