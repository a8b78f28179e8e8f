"""emseg.io: readers (slice by slice and whole volumes) and writers of every format, on the real ISBI files and
on files built from them; bad files are refused with their name."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from emseg.io import (
    VolumeError,
    natural_key,
    open_slices,
    read_volume,
    stack_writer,
    tiff_spacing,
    volume_spacing,
    write_volume,
)
from emseg.io.safety import OutputError


def test_multipage_tiff(isbi_dir, isbi_volumes):
    volume = read_volume(isbi_dir / "train-volume.tif")
    assert volume.shape == (30, 512, 512) and volume.dtype == np.uint8
    np.testing.assert_array_equal(volume, isbi_volumes[0])


def test_png_folder_in_natural_order(tmp_path, isbi_volumes):
    image = isbi_volumes[0][:12]
    (tmp_path / "slices").mkdir()
    for index, plane in enumerate(image):  # s0.png ... s11.png: "s10" sorts before "s2" as text
        Image.fromarray(plane).save(tmp_path / "slices" / f"s{index}.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "slices"), image)


def test_natural_key_orders_numbers():
    assert sorted(["s10.png", "s2.png", "s1.png"], key=natural_key) == ["s1.png", "s2.png", "s10.png"]


def test_single_png_and_grey_alpha_png(tmp_path, isbi_volumes):
    slice0 = isbi_volumes[0][0]
    Image.fromarray(slice0).save(tmp_path / "one.png")
    assert read_volume(tmp_path / "one.png").shape == (1, 512, 512)
    grey_alpha = np.stack([slice0, np.full_like(slice0, 255)], axis=-1)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_volume(tmp_path / "la.png")[0], slice0)


def test_folder_of_tif_slices(tmp_path, isbi_volumes):
    import tifffile

    for i in range(3):
        tifffile.imwrite(tmp_path / f"z{i}.tif", isbi_volumes[1][i])
    np.testing.assert_array_equal(read_volume(tmp_path), isbi_volumes[1][:3])


def test_hdf5_with_and_without_key(tmp_path, isbi_volumes):
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["raw"] = isbi_volumes[0][:4]
        f["labels/membranes"] = isbi_volumes[1][:4]
    np.testing.assert_array_equal(read_volume(tmp_path / "two.h5", "labels/membranes"), isbi_volumes[1][:4])
    with pytest.raises(VolumeError, match="two.h5.*give the dataset key"):
        read_volume(tmp_path / "two.h5")
    with pytest.raises(VolumeError, match="no dataset 'seg'.*labels/membranes"):
        read_volume(tmp_path / "two.h5", "seg")
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["volume"] = isbi_volumes[0][:2]
    np.testing.assert_array_equal(read_volume(tmp_path / "one.h5"), isbi_volumes[0][:2])


def test_nifti_round_trip_keeps_orientation_and_spacing(tmp_path, isbi_volumes):
    import nibabel as nib

    volume = isbi_volumes[0][:3, :100, :80]  # non-square, so a transposition would show
    write_volume(tmp_path / "v.nii.gz", volume, "nifti", "uint8", spacing=(50, 4, 4))
    np.testing.assert_array_equal(read_volume(tmp_path / "v.nii.gz"), volume)
    assert nib.load(str(tmp_path / "v.nii.gz")).header.get_zooms() == (4.0, 4.0, 50.0)


def test_tiff_writers_round_trip(tmp_path, isbi_volumes):
    probabilities = isbi_volumes[1][:3].astype(np.float32) / 255
    write_volume(tmp_path / "p.tif", probabilities, "tiff", "float32")
    back = read_volume(tmp_path / "p.tif")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, probabilities)
    write_volume(tmp_path / "m.tif", isbi_volumes[1][:1], "tiff", "uint8")
    np.testing.assert_array_equal(read_volume(tmp_path / "m.tif"), isbi_volumes[1][:1])
    with pytest.raises(VolumeError, match="outside 0..255"):
        write_volume(tmp_path / "bad.tif", probabilities * 300, "tiff", "uint8")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(VolumeError, match="nothere.tif: no such file"):
        read_volume(tmp_path / "nothere.tif")


def test_non_tiff_named_tif_is_named(tmp_path):
    fake = tmp_path / "fake.tif"
    fake.write_text("this is not an image")
    with pytest.raises(VolumeError, match="fake.tif: not a readable TIFF"):
        read_volume(fake)


def test_truncated_tiff_is_named(tmp_path, isbi_dir):
    data = (isbi_dir / "train-volume.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:5000])
    with pytest.raises(VolumeError, match="cut.tif"):
        read_volume(tmp_path / "cut.tif")


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeError, match="empty: folder holds no image slices"):
        read_volume(tmp_path / "empty")


def test_folder_with_mismatched_slices_is_named(tmp_path, isbi_volumes):
    Image.fromarray(isbi_volumes[0][0]).save(tmp_path / "a1.png")
    Image.fromarray(isbi_volumes[0][1][:256]).save(tmp_path / "a2.png")
    with pytest.raises(VolumeError, match="a2.png: slice a2.png has shape"):
        read_volume(tmp_path)


def test_colour_image_is_refused(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "red.png")
    with pytest.raises(VolumeError, match="red.png: colour image"):
        read_volume(tmp_path / "red.png")


def test_unknown_suffix_is_named(tmp_path):
    (tmp_path / "v.csv").write_text("1,2")
    with pytest.raises(VolumeError, match="v.csv: unsupported file type"):
        read_volume(tmp_path / "v.csv")


@pytest.mark.parametrize("kind", ["tiff", "folder", "hdf5", "nifti"])
def test_slices_equal_the_whole_volume(inputs, stack, kind):
    key = "raw" if kind == "hdf5" else None
    with open_slices(inputs[kind], key) as source:
        assert len(source) == 3 and source.shape == (128, 96)
        np.testing.assert_array_equal(np.stack(list(source)), stack)
    np.testing.assert_array_equal(read_volume(inputs[kind], key), stack)


def test_bad_inputs_are_named(tmp_path, inputs):
    with pytest.raises(VolumeError, match="v.h5: give the dataset key"):
        open_slices(inputs["hdf5"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeError, match="empty: folder holds no image slices"):
        open_slices(tmp_path / "empty")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(VolumeError, match="bad.tif: not a readable TIFF"):
        open_slices(tmp_path / "bad.tif")


@pytest.mark.parametrize(("output_format", "name", "dtype"), [
    ("tiff", "p.tif", "float32"), ("tiff", "m.tif", "uint8"), ("png", "masks", "uint8"), ("nifti", "p.nii", "float32"),
    ("nifti", "p.nii.gz", "float32"),
])
def test_writers_round_trip_through_the_readers(tmp_path, stack, output_format, name, dtype):
    data = stack if dtype == "uint8" else stack / np.float32(255)
    path = tmp_path / name
    with stack_writer(output_format, path, dtype, shape=stack.shape[1:], count=3, spacing=(0.05, 0.004, 0.004)) as w:
        for image in data:
            w.write(image)
    back = read_volume(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, data)
    if output_format == "nifti":
        assert nib.load(path).header.get_zooms() == pytest.approx((0.004, 0.004, 0.05))


def test_channel_stack_and_interrupted_write(tmp_path):
    path = tmp_path / "channels.tif"
    with stack_writer("tiff", path, shape=(8, 8), count=2) as w:
        for z in range(2):
            w.write(np.full((3, 8, 8), z, np.float32))
    assert tifffile.imread(path).shape == (2, 3, 8, 8)
    failed = tmp_path / "failed.tif"
    with pytest.raises(RuntimeError), stack_writer("tiff", failed, shape=(8, 8), count=2) as w:
        w.write(np.zeros((8, 8), np.float32))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [path]  # nothing left of the interrupted stack


def test_uint8_writer_refuses_values_out_of_range(tmp_path):
    with pytest.raises(VolumeError, match="0..255"), stack_writer("tiff", tmp_path / "m.tif", "uint8", (4, 4), 1) as w:
        w.write(np.full((4, 4), 300.0))


def test_tiff_with_all_slices_in_one_page_reads_alike(tmp_path, stack):
    path = tmp_path / "samples.tif"
    tifffile.imwrite(path, stack)  # tifffile stores a (3, H, W) array as one page of 3 samples
    with open_slices(path) as source:
        assert len(source) == 3
        np.testing.assert_array_equal(np.stack(list(source)), stack)


def test_png_writer_never_clears_a_foreign_part_folder(tmp_path, stack):
    """``<out>.part`` is emseg's scratch name; a folder of that name holding anything else is left alone."""
    scratch = tmp_path / "masks.part"
    scratch.mkdir()
    (scratch / "notes.txt").write_text("not emseg's")
    with pytest.raises(OutputError, match="masks.part: exists and holds files emseg did not"):
        write_volume(tmp_path / "masks", stack, "png")
    assert (scratch / "notes.txt").read_text() == "not emseg's" and not (tmp_path / "masks").exists()


ISBI_SPACING = (0.05, 0.004, 0.004)


def test_tiff_outputs_are_imagej_hyperstacks_with_the_pixel_size(tmp_path, stack):
    """What Fiji reads: an ImageJ hyperstack, (Z, Y, X) or (Z, C, Y, X), pixels per micrometre in the resolution tags,
    the z spacing and unit in ImageJ's description; emseg reads the same size back."""
    probabilities = stack / np.float32(255)
    write_volume(tmp_path / "p.tif", probabilities, spacing=ISBI_SPACING)
    with stack_writer("tiff", tmp_path / "c.tif", "float32", stack.shape[1:], 3, ISBI_SPACING) as writer:
        for image in probabilities:
            writer.write(np.stack([1 - image, image]))
    for name, shape, axes in (("p.tif", stack.shape, "ZYX"), ("c.tif", (3, 2, *stack.shape[1:]), "ZCYX")):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_imagej and tif.series[0].axes == axes and tif.series[0].shape == shape
            assert tif.imagej_metadata["spacing"] == 0.05 and tif.imagej_metadata["unit"] == "um"
            assert tif.pages[0].resolution == pytest.approx((250.0, 250.0))
        assert tiff_spacing(tmp_path / name) == pytest.approx(ISBI_SPACING)
    np.testing.assert_array_equal(read_volume(tmp_path / "p.tif"), probabilities)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif")[:, 1], probabilities)


def test_label_tiffs_stay_exact_integers(tmp_path, stack):
    """ImageJ has no uint32: labels that fit are a uint16 hyperstack, larger ones a plain uint32 TIFF; both read
    back as the same integers with their pixel size."""
    small = stack.astype(np.uint32) * 257  # up to 65535
    large = small + np.uint32(65536) * (stack > 128)
    for name, labels, imagej in (("small.tif", small, True), ("large.tif", large, False)):
        write_volume(tmp_path / name, labels, dtype="uint32", spacing=ISBI_SPACING)
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_imagej == imagej
            assert tif.series[0].dtype == (np.uint16 if imagej else np.uint32)
        np.testing.assert_array_equal(read_volume(tmp_path / name), labels)
        assert volume_spacing(tmp_path / name) == pytest.approx(ISBI_SPACING)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.tif", "small.tif"]  # no scratch files left


def test_class_maps_carry_a_colour_table(tmp_path, stack):
    """A 0/1 mask shows black and colour in a viewer (ImageJ LUT, PNG palette) and still reads back as 0/1."""
    from emseg.visualize import CLASS_COLOURS, class_palette

    mask = (stack > 128).astype(np.uint8)
    for output_format, name in (("tiff", "m.tif"), ("png", "masks")):
        with stack_writer(output_format, tmp_path / name, "uint8", mask.shape[1:], 3, ISBI_SPACING,
                          palette=class_palette()) as writer:
            for image in mask:
                writer.write(image)
        np.testing.assert_array_equal(read_volume(tmp_path / name), mask)
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        lut = np.asarray(tif.imagej_metadata["LUTs"]).reshape(-1, 3, 256)[0]  # one LUT per channel
    assert lut.shape == (3, 256) and tuple(lut[:, 0]) == (0, 0, 0) and tuple(lut[:, 1]) == tuple(CLASS_COLOURS[1])
    with Image.open(tmp_path / "masks" / "slice_0000.png") as png:
        assert png.mode == "P" and tuple(png.getpalette()[3:6]) == tuple(CLASS_COLOURS[1])


def test_tiff_spacing_reads_what_files_state(tmp_path, stack):
    tifffile.imwrite(tmp_path / "bare.tif", stack)
    assert tiff_spacing(tmp_path / "bare.tif") is None  # states nothing: no guess
    tifffile.imwrite(tmp_path / "nm.tif", stack, imagej=True, resolution=(0.25, 0.2),
                     metadata={"axes": "ZYX", "spacing": 50, "unit": "nm"})
    assert tiff_spacing(tmp_path / "nm.tif") == pytest.approx((0.05, 0.005, 0.004))
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(VolumeError, match="bad.tif: not a readable TIFF"):
        tiff_spacing(tmp_path / "bad.tif")
