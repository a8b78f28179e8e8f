"""Never destroy a user's data: outputs may not be, lie inside or contain an input; an existing output is replaced
only when asked (``overwrite``) and only if it is something emseg writes; write errors name the file and the cause.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from pathlib import Path


class OutputError(OSError):
    """An output that would destroy data, or that cannot be written; the message names the file and the fix."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_an_input(output: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an ``output`` that is, is inside, or contains one of ``inputs`` (paths resolved, symlinks followed)."""
    out = Path(output).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if out == source:
            raise OutputError(f"{output}: is the input {given}; write the output to another path")
        if _inside(out, source):
            raise OutputError(f"{output}: lies inside the input folder {given}; write the output elsewhere")
        if _inside(source, out):
            raise OutputError(f"{output}: contains the input {given}; write the output elsewhere")


def check_new_files(paths: Iterable[str | Path], overwrite: bool = False) -> None:
    """Refuse to write over any existing file in ``paths`` unless ``overwrite``, and over anything but a file ever."""
    for path in map(Path, paths):
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise OutputError(f"{path}: exists; choose another output, or pass --overwrite to replace it")
            if not path.is_file():
                raise OutputError(f"{path}: exists and is not a file; emseg replaces only files it writes")


def describe_write_error(error: BaseException, path: str | Path) -> OutputError:
    """An :class:`OutputError` naming ``path`` and the cause of ``error`` (disk full, read-only, permission)."""
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EFBIG: "the file is larger than the file system or a size limit allows",
    }
    code = getattr(error, "errno", None)
    reason = reasons.get(code) or getattr(error, "strerror", None) or str(error)
    if code is None and "written" in str(error):  # numpy/tifffile's short write: almost always a full disk
        try:
            free = shutil.disk_usage(Path(path).parent).free
            reason = f"{error} ({free} bytes free on that disk: it is probably full)"
        except OSError:
            pass
    return OutputError(f"{path}: cannot be written: {reason}; nothing was written there, earlier outputs are "
                       f"unchanged")
