"""Where a bundle lives, and where its data, outputs and MLflow store go.

A bundle folder is self-contained: its configs refer to nothing outside it. ``bundle_root`` is the
folder of the config files being run (MONAI's ``ConfigWorkflow`` knows it but never sets
``bundle_root``), so a bundle runs from any working directory with ``--config_file
/any/path/bundles/NAME/configs/train.json``, and a copied bundle folder runs on its own.
"""

from __future__ import annotations

import inspect
from pathlib import Path


def running_workflow():
    """The MONAI ``ConfigWorkflow`` running in this process (found on the call stack), or None.

    MONAI hands the workflow to none of the objects its config builds; config expressions are
    evaluated inside the workflow's methods, so it is on the stack when they run.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ConfigWorkflow):
            return owner
        frame = frame.f_back
    return None


def _running_script_config() -> Path | None:
    """The first config file of a MONAI bundle script running without a workflow (``ckpt_export``, ...)."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals.get("__name__") == "monai.bundle.scripts" and frame.f_locals.get("config_file_"):
            files = frame.f_locals["config_file_"]
            return Path(files if isinstance(files, (str, Path)) else files[0])
        frame = frame.f_back
    return None


def bundle_root() -> str:
    """Absolute path of the running bundle: the folder holding the ``configs/`` folder of the config files
    (of the running MONAI workflow, or of a MONAI bundle script such as ``ckpt_export``)."""
    workflow = running_workflow()
    configs = Path(workflow.config_root_path) if workflow is not None else _running_script_config()
    if configs is None:
        raise RuntimeError("bundle_root: no MONAI bundle workflow is running; set bundle_root explicitly "
                           "(--bundle_root PATH, or an override when parsing the config in Python)")
    configs = configs.resolve() if workflow is not None else configs.resolve().parent
    return str(configs.parent if configs.name == "configs" else configs)


def project_root(bundle_root: str | Path) -> str:
    """The folder that holds ``bundles/``: default data (``data/``) and the MLflow store live there.

    For a bundle outside a ``bundles/`` folder (a copied or unpacked bundle) it is the bundle itself.
    """
    bundle_root = Path(bundle_root).resolve()
    if bundle_root.parent.name == "bundles":
        return str(bundle_root.parent.parent)
    return str(bundle_root)


def load_config(config_files, overrides: dict | None = None):
    """A MONAI ``ConfigParser`` of a bundle's ``config_files`` (merged left to right, as the bundle CLI does),
    with ``bundle_root`` set to their bundle and ``overrides`` applied (``{"train#dataloader#num_workers": 2}``
    as ``--train#dataloader#num_workers 2`` does on the CLI)."""
    from monai.bundle import ConfigParser

    files = [Path(f).resolve() for f in ([config_files] if isinstance(config_files, (str, Path)) else config_files)]
    configs = files[0].parent
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(configs.parent if configs.name == "configs" else configs), **(overrides or {})})
    return parser
