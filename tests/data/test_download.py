"""The ISBI downloader against an HTTP server on 127.0.0.1 serving an HDF5 file built here."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import h5py
import numpy as np
import pytest
import tifffile

from emseg.cli import main
from emseg.data.isbi2012 import (
    IMAGE_FILE,
    LABEL_FILE,
    download_isbi2012,
    interior_from_membrane_labels,
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def served_hdf5(tmp_path, isbi_volumes):
    """Serve torch-em's layout (raw, labels/membranes with 1 = membrane) of 3 real slices; yield (url, sha256)."""
    image, labels = isbi_volumes[0][:3], isbi_volumes[1][:3]
    site = tmp_path / "site"
    site.mkdir()
    with h5py.File(site / "isbi.h5", "w") as f:
        f["raw"] = image
        f["labels/membranes"] = (labels == 0).astype(np.uint8)  # opposite polarity to ISBI's TIFF
    digest = hashlib.sha256((site / "isbi.h5").read_bytes()).hexdigest()
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/isbi.h5", digest
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_converts(tmp_path, served_hdf5, isbi_volumes):
    url, digest = served_hdf5
    root = tmp_path / "data"
    download_isbi2012(root, url=url, sha256=digest)
    np.testing.assert_array_equal(tifffile.imread(root / IMAGE_FILE), isbi_volumes[0][:3])
    # membrane mask inverted to the ISBI convention: 255 = cell interior
    np.testing.assert_array_equal(tifffile.imread(root / LABEL_FILE), isbi_volumes[1][:3])
    assert sorted(p.name for p in root.iterdir()) == sorted([IMAGE_FILE, LABEL_FILE])  # HDF5 removed


def test_wrong_checksum_writes_nothing(tmp_path, served_hdf5):
    from monai.apps.utils import HashCheckError

    url, _ = served_hdf5
    root = tmp_path / "data"
    with pytest.raises(HashCheckError):
        download_isbi2012(root, url=url, sha256="0" * 64)
    assert not (root / IMAGE_FILE).exists() and not (root / LABEL_FILE).exists()


def test_cli_download(tmp_path, served_hdf5, capsys):
    url, digest = served_hdf5
    root = tmp_path / "cli"
    assert main(["data", "download", "isbi2012", "--root", str(root), "--url", url, "--sha256", digest]) == 0
    assert (root / LABEL_FILE).is_file()
    assert main(["data", "download", "isbi2012", "--root", str(tmp_path / "bad"), "--url", url,
                 "--sha256", "1" * 64]) == 1
    assert "hash check of downloaded file failed" in capsys.readouterr().err


def test_label_polarity_detection(isbi_volumes):
    labels = isbi_volumes[1][:2]
    np.testing.assert_array_equal(interior_from_membrane_labels(labels == 0, "x"), labels)  # membrane mask
    np.testing.assert_array_equal(interior_from_membrane_labels(labels // 255, "x"), labels)  # interior mask


def test_a_kept_hdf5_copy_stays_and_the_tiffs_are_not_overwritten(tmp_path, served_hdf5):
    url, digest = served_hdf5
    root = tmp_path / "data"
    download_isbi2012(root, url=url, sha256=digest, keep_hdf5=True)
    kept = (root / "isbi2012_train.h5").read_bytes()
    (root / IMAGE_FILE).unlink()  # the user keeps the HDF5 and asks again
    from emseg.io.safety import OutputError

    with pytest.raises(OutputError, match=f"{LABEL_FILE}: exists"):  # a file already there is never replaced
        download_isbi2012(root, url=url, sha256=digest)
    assert (root / "isbi2012_train.h5").read_bytes() == kept  # the user's copy, not deleted
