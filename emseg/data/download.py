"""Download a file with MONAI's download utility, checking its sha256; one error when it cannot be had."""

from __future__ import annotations

from pathlib import Path


class DownloadError(RuntimeError):
    """The server could not be reached or sent nothing."""


def download_file(url: str, target: str | Path, sha256: str | None = None) -> Path:
    """Download ``url`` to ``target`` and verify its ``sha256`` (None: no check).

    Raises MONAI's ``HashCheckError`` (nothing is kept) when the checksum differs, and
    :class:`DownloadError` when the server cannot be reached.
    """
    from urllib.error import URLError

    from monai.apps.utils import download_url

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url(url=url, filepath=target, hash_val=sha256, hash_type="sha256", progress=False)
    except (URLError, OSError) as err:
        raise DownloadError(f"cannot download {url}: {getattr(err, 'reason', err)}") from err
    return target
