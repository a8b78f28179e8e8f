"""Where a bundle lives and where its outputs, data and MLflow store go.

MONAI's ConfigWorkflow does not derive ``bundle_root`` from the config file, so
bundle configs call :func:`find_bundle_root` to find their own folder whether
they are run from the repository root, from the bundle folder or from inside it.
"""

from __future__ import annotations

import os
from pathlib import Path


def _is_bundle(folder: Path) -> bool:
    return (folder / "configs" / "metadata.json").is_file()


def find_bundle_root(name: str, start: str | Path | None = None) -> str:
    """Absolute path of the bundle folder called ``name``.

    Looks at the working directory (``start``) and its parents for either the
    bundle itself (a folder ``name`` with ``configs/metadata.json``) or a
    ``bundles/<name>`` folder below it. Falls back to the working directory when
    it is a bundle of another name (an unpacked, renamed bundle).
    """
    start = Path(start or os.getcwd()).resolve()
    for folder in (start, *start.parents):
        if folder.name == name and _is_bundle(folder):
            return str(folder)
        candidate = folder / "bundles" / name
        if _is_bundle(candidate):
            return str(candidate)
    if _is_bundle(start):
        return str(start)
    raise FileNotFoundError(
        f"cannot find bundle '{name}' from {start}: run from the repository root, from bundles/{name}, "
        f"or set bundle_root on the command line (--bundle_root PATH)"
    )


def project_root(bundle_root: str | Path) -> str:
    """The folder that holds ``bundles/``: shared data and the MLflow store live there.

    For a bundle outside a ``bundles/`` folder (an unpacked bundle) it is the bundle itself.
    """
    bundle_root = Path(bundle_root).resolve()
    if bundle_root.parent.name == "bundles":
        return str(bundle_root.parent.parent)
    return str(bundle_root)


def load_bundle_config(config_files, project: str | Path | None = None, overrides: dict | None = None):
    """A MONAI ``ConfigParser`` of ``config_files`` (merged in order) with the shared-config references
    (``%bundles/common/...``) resolved from the project root, wherever the caller runs.

    ``project`` defaults to the project of the first file (``<project>/bundles/<name>/configs/x.json``);
    ``overrides`` set top-level keys as ``--key value`` does on the bundle CLI.
    """
    from monai.bundle import ConfigParser

    files = [str(Path(f).resolve()) for f in ([config_files] if isinstance(config_files, (str, Path)) else config_files)]
    project = Path(project) if project else Path(files[0]).parents[3]
    if len(files) == 1:  # as written, so that an overlay (keys like "validate#handlers") resolves on its own
        parser = ConfigParser(ConfigParser.load_config_file(files[0]))
    else:
        parser = ConfigParser()
        parser.read_config(files)
    parser.update(overrides or {})
    cwd = os.getcwd()
    os.chdir(project)
    try:
        parser.resolve_macro_and_relative_ids()
    finally:
        os.chdir(cwd)
    return parser
