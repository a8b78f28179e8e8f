"""Files: atomic replacement (write beside the target, then rename, so a reader sees the old file or the new one,
never half of one, and a failed write leaves the old file as it was and says which file and why) and content
digests."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from emseg.io.safety import describe_write_error


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary path in ``path``'s folder, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only one ...: name the file and the cause
        Path(tmp).unlink(missing_ok=True)
        raise describe_write_error(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` atomically."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def write_csv_atomically(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Replace ``path`` atomically with ``rows`` as CSV (a header of ``columns``, default the first row's keys)."""
    import csv
    import io

    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomically(path, table.getvalue())


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
