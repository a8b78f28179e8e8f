"""emseg: MONAI bundles and shared code for electron-microscopy segmentation.

Submodules load on first use (``emseg.data``, ``emseg.engine``, ...), so bundle
configs need only ``"$import emseg"``. The layout, one concept per package:

| module | what |
|---|---|
| ``io`` | readers and writers of volumes, one per format, by registry |
| ``data`` | data sets by name, splits, tiling, downloads |
| ``transforms`` | EM augmentation presets and border weights on MONAI dict transforms |
| ``networks`` | architectures MONAI lacks and weight loading |
| ``losses`` | losses by name |
| ``engine`` | mixed precision, test-time augmentation, Ignite handlers, MLflow tracking |
| ``evaluation`` | challenge and per-class scores, validation metrics, the evaluation report |
| ``inference`` | whole-stack streaming inference |
| ``blockwise`` | block-wise inference of zarr volumes on Dask, resumable |
| ``bundle`` | bundle paths, rendering configs from the template, packing and verifying, previews |
| ``visualize`` | overlays and contrast stretching for pictures |
| ``cli`` | the ``emseg`` command |
"""

import importlib

from emseg.errors import install_for_monai_cli

__version__ = "0.1.0"

_SUBMODULES = (
    "blockwise",
    "bundle",
    "cli",
    "data",
    "engine",
    "errors",
    "evaluation",
    "inference",
    "io",
    "losses",
    "networks",
    "transforms",
    "visualize",
)


install_for_monai_cli()  # under `python -m monai.bundle`, the last line of an error is emseg's message


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
