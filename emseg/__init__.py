"""emseg: MONAI bundles and shared code for electron-microscopy segmentation.

Submodules load on first use (``emseg.data``, ``emseg.engine``, ...), so bundle configs need only
``"$import emseg"``. Four layers; a module imports only from its own layer's earlier packages or from lower
layers, and at its top (``tests/test_layout.py`` holds the table):

| layer | packages | what |
|---|---|---|
| core: arrays in, arrays out | ``errors``, ``io``, ``visualize``, ``data``, ``losses``, ``transforms``, ``networks``, ``segmentation``, ``evaluation`` | files and volumes, data sets, augmentation, losses, architectures, cells, scores |
| runtime | ``engine`` | compute (precision, windows, TTA, averaging, allocator, distributed, a trained model, mean teacher) and record-keeping (paths, runs, MLflow tracking, registry, handlers) |
| workflows | ``inference``, ``blockwise``, ``bundle``, ``tuning`` | whole stacks, zarr volumes on Dask, render/pack/verify/bioimage.io/preview, tuning the cell parameters |
| front ends | ``cli`` (and the bundles' configs) | the ``emseg`` command, one module per command group |
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
    "tuning",
    "visualize",
)


install_for_monai_cli()  # under `python -m monai.bundle`, the last line of an error is emseg's message


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
