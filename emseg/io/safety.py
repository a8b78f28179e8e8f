"""Never destroy a user's data: outputs may not be, lie inside or contain an input; an existing output is replaced
only when asked (``overwrite``) and only if it is something emseg writes; write errors name the file and the cause.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
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


LOCK_TEXT = "job "  # how an emseg lock file begins ("job PID on HOST (since ...)")


class OutputLock:
    """One job at a time writes ``output``: an exclusive lock on ``<output>.lock`` (pid, host and start inside, for
    the message), held from before the output is checked until it is published, then removed. A second job asking
    for it is refused at once with the first one's pid, so two jobs never interleave their writes. A file of that name
    that is not an emseg lock is refused, never written or removed. Advisory (``flock``; on file systems or systems
    without it, no lock)."""

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".lock")
        self._file = None

    def __enter__(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # Windows
            return self
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(self.path, "a+")
            except OSError as err:  # the output's folder cannot be written: say so of the output
                raise describe_write_error(err, self.output) from err
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise describe_write_error(err, self.path) from err
                raise OutputError(f"{self.output}: {holder} is writing it now; wait for that job to finish, or write "
                                  f"to another output") from None
            try:  # the lock file may have been removed by the job that held it: lock the one now at the path
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        found = handle.read()
        if found and not found.startswith(LOCK_TEXT):  # a file of the user's that happens to have this name
            handle.close()
            raise OutputError(f"{self.path}: exists and is not emseg's lock file; emseg leaves it alone: move it "
                              f"away, or write to another output")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{LOCK_TEXT}{os.getpid()} on {socket.gethostname()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()  # closing releases the lock
            self._file = None
