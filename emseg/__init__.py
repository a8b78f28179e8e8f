"""emseg: MONAI bundles and shared code for electron-microscopy segmentation.

Submodules load on first use (``emseg.data``, ``emseg.tracking``, ...), so bundle
configs need only ``"$import emseg"``.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "class_evaluation",
    "cli",
    "data",
    "evaluation",
    "handlers",
    "inference",
    "losses",
    "metrics",
    "networks",
    "packaging",
    "paths",
    "precision",
    "preview",
    "tracking",
    "transforms",
    "tta",
    "writers",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
