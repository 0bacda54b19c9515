"""Image decoding: every accepted format, the conversions recorded, and the rejected files."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image, features
from pydicom.data import get_testdata_file

from worker.audit.images import ImageError, load_image, to_model_input


def gradient_gray(height: int = 24, width: int = 20, dtype=np.uint8) -> np.ndarray:
    """A gray ramp over the dtype's full range, so a scaling error shows."""
    top = np.iinfo(dtype).max
    values = np.linspace(0, top, height * width).round().astype(dtype)
    return values.reshape(height, width)


def gradient_rgb(height: int = 24, width: int = 20) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack(
        [rows * 255 // (height - 1), cols * 255 // (width - 1), (rows + cols) % 256], axis=2
    ).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_rgb16(rgb: np.ndarray) -> bytes:
    """Encode (H, W, 3) uint16 as a 16-bit-per-channel RGB PNG, which Pillow cannot write."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR for an 8-bit gray image of any size, with a tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def test_png_gray_8bit_exact():
    array = gradient_gray()
    decoded = load_image(encode(array, "PNG"))

    assert decoded.source_format == "PNG"
    assert decoded.bit_depth == 8
    assert decoded.pixels.shape == (24, 20, 1)
    assert decoded.pixels.dtype == np.float32
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], array.astype(np.float32) / 255)
    assert decoded.notes == []


def test_png_gray_16bit_exact():
    array = gradient_gray(dtype=np.uint16)
    decoded = load_image(encode(array, "PNG"))

    assert decoded.bit_depth == 16
    assert decoded.pixels.max() == 1.0
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], array.astype(np.float32) / 65535)


def test_tiff_16bit_exact():
    array = gradient_gray(dtype=np.uint16)
    decoded = load_image(encode(array, "TIFF"))

    assert decoded.source_format == "TIFF"
    assert decoded.bit_depth == 16
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], array.astype(np.float32) / 65535)


def test_tiff_rgb_16bit_exact(tmp_path):
    rgb = gradient_rgb().astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    decoded = load_image(path)

    assert decoded.source_format == "TIFF"
    assert decoded.bit_depth == 16
    np.testing.assert_array_equal(decoded.pixels, rgb.astype(np.float32) / 65535)


def test_png_rgb_16bit_noted_as_8bit():
    rgb = gradient_rgb().astype(np.uint16) * 257
    decoded = load_image(png_rgb16(rgb))

    assert decoded.source_format == "PNG"
    assert decoded.bit_depth == 8
    np.testing.assert_array_equal(decoded.pixels, (rgb >> 8).astype(np.float32) / 255)
    assert "16-bit colour PNG decoded at 8 bits per channel" in decoded.notes


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})],
)
def test_lossless_rgb_exact(fmt, options):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow was built without WebP")
    array = gradient_rgb()
    decoded = load_image(encode(array, fmt, **options))

    assert decoded.source_format == fmt
    assert decoded.bit_depth == 8
    assert decoded.pixels.shape == (24, 20, 3)
    np.testing.assert_array_equal(decoded.pixels, array.astype(np.float32) / 255)


def test_jpeg_close_to_source():
    array = gradient_rgb()
    decoded = load_image(encode(array, "JPEG", quality=95))

    assert decoded.source_format == "JPEG"
    assert decoded.pixels.shape == (24, 20, 3)
    error = np.abs(decoded.pixels - array.astype(np.float32) / 255).mean()
    assert error < 0.02


def test_rgba_alpha_dropped_and_noted():
    rgb = gradient_rgb()
    alpha = np.full((*rgb.shape[:2], 1), 77, dtype=np.uint8)
    decoded = load_image(encode(np.concatenate([rgb, alpha], axis=2), "PNG"))

    assert decoded.pixels.shape == (24, 20, 3)
    np.testing.assert_array_equal(decoded.pixels, rgb.astype(np.float32) / 255)
    assert "alpha channel dropped" in decoded.notes


def test_float_tiff_rejected():
    data = encode(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "TIFF", mode="F")

    with pytest.raises(ImageError, match="floating-point"):
        load_image(data, name="float.tif")


def test_dicom_ct_signed_16bit_scaled():
    """CT_small has no VOI window, so its stored values are scaled by 2**16 - 1."""
    path = Path(get_testdata_file("CT_small.dcm"))
    dataset = pydicom.dcmread(path)
    assert "WindowCenter" not in dataset
    decoded = load_image(path)

    assert decoded.source_format == "DICOM"
    assert decoded.bit_depth == 16
    assert decoded.pixels.shape == (128, 128, 1)
    expected = (dataset.pixel_array.astype(np.float64) + 2**15) / (2**16 - 1)
    np.testing.assert_allclose(decoded.pixels[:, :, 0], expected, atol=1e-7)
    assert "DICOM MONOCHROME2, 16 bits stored, scaled by 2**16 - 1" in decoded.notes
    assert "signed values shifted by 2**(BitsStored-1)" in decoded.notes


def test_dicom_mr_windowed():
    """MR_small has a VOI window (center 600, width 1600) and no rescale."""
    path = Path(get_testdata_file("MR_small.dcm"))
    dataset = pydicom.dcmread(path)
    decoded = load_image(path)

    assert decoded.bit_depth == 16
    assert decoded.pixels.shape == (64, 64, 1)
    # DICOM PS3.3 C.11.2.1.2, linear window: (x - (c - 0.5)) / (w - 1) + 0.5, clipped.
    values = dataset.pixel_array.astype(np.float64)
    expected = np.clip((values - 599.5) / 1599 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(decoded.pixels[:, :, 0], expected, atol=1e-6)
    assert any("window (center 600, width 1600)" in note for note in decoded.notes)


def test_dicom_monochrome1_inverted(tmp_path):
    # pydicom's bundled files have no MONOCHROME1 image, so one is made from MR_small.
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    dataset.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    dataset.save_as(path)

    decoded = load_image(path)
    reference = load_image(Path(get_testdata_file("MR_small.dcm")))

    np.testing.assert_allclose(decoded.pixels, 1.0 - reference.pixels, atol=1e-6)
    assert "MONOCHROME1 inverted so that bright means high" in decoded.notes


def test_dicom_unsigned_12bit(tmp_path):
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    values = dataset.pixel_array.astype(np.uint16)
    assert values.max() < 2**12  # fits in 12 bits, so the bytes can be relabelled
    dataset.PixelRepresentation = 0
    del dataset.WindowCenter, dataset.WindowWidth  # take the scaled path
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelData = values.tobytes()
    path = tmp_path / "mr12.dcm"
    dataset.save_as(path)

    decoded = load_image(path)

    assert decoded.bit_depth == 12
    assert "DICOM MONOCHROME2, 12 bits stored, scaled by 2**12 - 1" in decoded.notes
    np.testing.assert_allclose(decoded.pixels[:, :, 0], values / 4095.0, atol=1e-7)
    assert not any("signed" in note for note in decoded.notes)


def test_dicom_over_pixel_limit_rejected():
    path = Path(get_testdata_file("CT_small.dcm"))

    with pytest.raises(ImageError, match="128x128 = 16384 pixels"):
        load_image(path, max_pixels=10_000)


def test_to_model_input_rgb_to_gray_resized():
    decoded = load_image(encode(gradient_rgb(64, 48), "PNG"))
    pixels, conversions = to_model_input(decoded, channels=1, input_size=(32, 32))

    assert pixels.shape == (1, 32, 32)
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0
    assert pixels.max() <= 1.0
    assert "RGB converted to gray (ITU-R 601-2 luma)" in conversions
    assert "resized from 64x48 to 32x32 (H x W, bilinear)" in conversions


def test_to_model_input_gray_replicated():
    array = gradient_gray(32, 32)
    decoded = load_image(encode(array, "PNG"))
    pixels, conversions = to_model_input(decoded, channels=3, input_size=(32, 32))

    assert pixels.shape == (3, 32, 32)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[channel], array.astype(np.float32) / 255)
    assert conversions == ["gray replicated to 3 channels"]


def test_to_model_input_gray_luma_weights():
    color = np.zeros((32, 32, 3), dtype=np.uint8)
    color[..., 0] = 255  # pure red: luma 0.299
    decoded = load_image(encode(color, "PNG"))
    pixels, _ = to_model_input(decoded, channels=1, input_size=(32, 32))

    np.testing.assert_allclose(pixels, 0.299, atol=1e-6)


def test_to_model_input_keeps_alpha_note():
    rgba = np.concatenate([gradient_rgb(32, 32), np.full((32, 32, 1), 9, np.uint8)], axis=2)
    _, conversions = to_model_input(load_image(encode(rgba, "PNG")), 3, (32, 32))

    assert "alpha channel dropped" in conversions


def test_empty_file_rejected():
    with pytest.raises(ImageError, match=r"'empty\.png' is empty \(0 bytes\)"):
        load_image(b"", name="empty.png")


def test_truncated_png_rejected():
    data = encode(gradient_rgb(64, 64), "PNG")

    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2], name="cut.png")


def test_text_file_rejected(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")

    with pytest.raises(ImageError, match=r"'notes\.png' is not a recognised image"):
        load_image(path)


def test_missing_file_rejected(tmp_path):
    with pytest.raises(ImageError, match="could not be read"):
        load_image(tmp_path / "absent.png")


def test_unsupported_format_rejected():
    data = encode(gradient_rgb(), "GIF")

    with pytest.raises(ImageError, match="GIF, which is not supported"):
        load_image(data, name="anim.gif")


def test_over_limit_rejected_from_header():
    # 7000 x 7000 = 49 million pixels: over the default 40 million, under Pillow's own limit.
    with pytest.raises(ImageError, match=r"7000x7000 = 49000000 pixels, over the limit"):
        load_image(png_header_only(7000, 7000), name="big.png")


def test_bomb_header_rejected():
    # 20000 x 20000 = 400 million pixels, over Pillow's decompression-bomb limit as well.
    with pytest.raises(ImageError, match=r"'bomb\.png'.*400000000") as caught:
        load_image(png_header_only(20000, 20000), name="bomb.png")
    assert "\n" not in str(caught.value)


def test_small_limit_applies():
    with pytest.raises(ImageError, match="over the limit of 100"):
        load_image(encode(gradient_gray(), "PNG"), max_pixels=100, name="ramp.png")


def mr_small_bytes(**attributes: object) -> bytes:
    """MR_small.dcm with the given attributes set, re-encoded."""
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    for key, value in attributes.items():
        setattr(dataset, key, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_dicom_deflated_rejected_before_inflating():
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageError, match="deflated DICOM"):
        load_image(buffer.getvalue())


def test_dicom_header_value_not_leaked(caplog):
    data = mr_small_bytes(RescaleSlope="9.999999").replace(b"9.999999", b"Doe^Jane")
    with caplog.at_level("DEBUG"), warnings.catch_warnings(record=True) as emitted:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as raised:
            load_image(data, name="scan")
    assert "Doe" not in str(raised.value)
    assert "Doe" not in caplog.text
    assert not any("Doe" in str(warning.message) for warning in emitted)


def test_dicom_window_width_one_thresholds():
    decoded = load_image(mr_small_bytes(WindowCenter=600, WindowWidth=1))
    assert set(np.unique(decoded.pixels).tolist()) <= {0.0, 1.0}
    assert np.isfinite(decoded.pixels).all()


def test_dicom_frames_checked_before_decoding():
    data = mr_small_bytes(Rows=20000, Columns=20000)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(data, max_pixels=1_000_000)
