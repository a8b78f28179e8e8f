"""PNG and JPEG: single 2-D images, folders of slices (PNG, JPEG or TIFF files in natural order), and folders of
uint8 PNG slices written as they come."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.io import tiff
from emseg.io.format import Format
from emseg.io.safety import OutputError
from emseg.io.source import SliceSource, VolumeError, natural_key, suffix
from emseg.io.stack import SLICE_PREFIX, StackWriter, _is_slice, _remove_partial
from emseg.io.tiff import grey_from_channels, open_tiff


def read_image(path: Path) -> np.ndarray:
    """One 2-D grey image (PNG, JPEG or single-page TIFF)."""
    if suffix(path) in (".tif", ".tiff"):
        with open_tiff(path) as source:
            if len(source) != 1:
                raise VolumeError(f"{path}: expected a 2-D slice, the file holds {len(source)}")
            return source[0]
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            image = np.asarray(img)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
        raise VolumeError(f"{path}: not a readable image file ({err})") from err
    if image.ndim == 3:
        image = grey_from_channels(image, path)
    if image.ndim != 2:
        raise VolumeError(f"{path}: expected a 2-D slice, got shape {image.shape}")
    return image


def list_slice_files(folder: Path) -> list[Path]:
    """Image files in ``folder`` in natural sort order."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and suffix(p) in SLICE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def open_folder(path: Path, key: str | None) -> SliceSource:
    files = list_slice_files(path)
    if not files:
        raise VolumeError(f"{path}: folder holds no image slices ({', '.join(SLICE_SUFFIXES)})")
    first = read_image(files[0])
    return SliceSource(path, len(files), first.shape, lambda i: read_image(files[i]),
                       describe=lambda i: f"{files[i]}: slice {files[i].name}")


def _open_image(path: Path, key: str | None) -> SliceSource:
    image = read_image(path)
    return SliceSource(path, 1, image.shape, lambda i: image)



class PngFolderWriter(StackWriter):
    """A folder of uint8 PNG slices named ``{prefix}{index:04d}.png``.

    An existing folder is replaced (with ``overwrite``) only when it holds nothing but such slices: a folder
    with any other file is never touched.
    """

    prefix = SLICE_PREFIX

    @staticmethod
    def _own_slices(folder: Path) -> bool:
        return all(_is_slice(f) for f in folder.iterdir())

    def _open(self, partial: Path) -> None:
        if partial.exists() and not (partial.is_dir() and self._own_slices(partial)):
            raise OutputError(f"{partial}: exists and holds files emseg did not write; move it away")
        _remove_partial(partial)  # our own leftover of an interrupted run
        partial.mkdir(parents=True)
        self._folder = partial

    def _not_replaceable(self) -> str | None:
        if self.path.is_dir() and not self.path.is_symlink() and self._own_slices(self.path):
            return None
        return (f"holds files emseg did not write; emseg replaces only a folder of its own {self.prefix}NNNN.png "
                f"slices: choose an empty or new output folder")

    def __init__(self, path: str | Path, dtype: str = "uint8", shape: Sequence[int] | None = None,
                 count: int | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                 palette: np.ndarray | None = None) -> None:
        super().__init__(path, "uint8", shape, count, spacing, overwrite, palette)

    def _write(self, image: np.ndarray) -> None:
        from PIL import Image

        if image.ndim != 2:
            raise VolumeError(f"{self.path}: PNG slices are 2-D, got shape {image.shape}")
        picture = Image.fromarray(image)
        if self.palette is not None:
            picture.putpalette(self.palette.reshape(-1).tolist())
        picture.save(self._folder / f"{self.prefix}{self.count:04d}.png")


FORMAT = Format(name="png", label="PNG, JPEG", suffixes=(".png", ".jpg", ".jpeg"), open=_open_image,
                writer=PngFolderWriter, output_suffix="")  # written: a folder of PNG slices
SLICE_SUFFIXES = (*FORMAT.suffixes, *tiff.FORMAT.suffixes)  # the files a folder of slices holds
