"""Decode image files into [0, 1] float arrays and convert them to a model's input.

Torch-free, so the API can validate an upload before it stores or enqueues anything.

Accepted: PNG, JPEG, TIFF, BMP and WebP (8- or 16-bit, gray or RGB; alpha is dropped) and
single-frame DICOM (12- to 16-bit gray). Nothing read from a DICOM header is logged or returned
except the pixel geometry and bit depth, so reports stay free of patient data.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image accepted by default, in pixels: a 40-megapixel photo fits, a bomb does not."""

PIL_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
DICOM_MAGIC_OFFSET = 128  # a DICOM Part 10 file has a 128-byte preamble, then b"DICM"


class ImageError(ValueError):
    """An input that is not a usable image; the message names the file and the fix."""


@dataclass
class DecodedImage:
    """An image decoded to floats.

    Attributes:
        pixels: (H, W, C) float32 in [0, 1], C = 1 (gray) or 3 (RGB).
        source_format: "PNG", "JPEG", "TIFF", "BMP", "WEBP" or "DICOM".
        bit_depth: bits per sample of the stored values (8, 12, 16, ...).
        notes: what decoding did to the stored values (alpha dropped, inverted, ...).
    """

    pixels: np.ndarray
    source_format: str
    bit_depth: int
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.pixels.shape[0], self.pixels.shape[1]


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"image {name!r} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; downscale it or raise the pixel limit (FRAGILITY_MAX_IMAGE_PIXELS)"
        )
    if width < 1 or height < 1:
        raise ImageError(f"image {name!r} has no pixels ({width}x{height})")


def _first_window(dataset: object) -> tuple[float, float] | None:
    """Return (center, width) of the file's first VOI window, or None when it has none."""
    center = getattr(dataset, "WindowCenter", None)
    width = getattr(dataset, "WindowWidth", None)
    if center is None or width is None:
        return None
    # Both attributes are multi-valued when the file offers several windows.
    if isinstance(center, Sequence) and not isinstance(center, str):
        center = center[0]
    if isinstance(width, Sequence) and not isinstance(width, str):
        width = width[0]
    try:
        center_value, width_value = float(center), float(width)
    except (TypeError, ValueError):
        return None
    return (center_value, width_value) if width_value >= 1 else None


DEFLATED_TRANSFER_SYNTAX = b"1.2.840.10008.1.2.1.99"


@dataclass
class _DicomHeader:
    """The pixel-geometry and display fields read from a DICOM header, nothing else."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_stored: int
    signed: bool
    photometric: str
    window: tuple[float, float] | None
    slope: float
    intercept: float


def _file_meta_bytes(data: bytes) -> bytes:
    """Return the file meta group (0002,xxxx) of a DICOM Part 10 file, from its group length.

    The group starts after the preamble and b"DICM" with (0002,0000) UL, the group's length.
    """
    start = DICOM_MAGIC_OFFSET + 4
    if data[start : start + 6] != b"\x02\x00\x00\x00UL" or len(data) < start + 12:
        return data[start : start + 1024]
    group_length = int.from_bytes(data[start + 8 : start + 12], "little")
    return data[start + 12 : start + 12 + min(group_length, 1 << 16)]


def _read_dicom_header(dataset: object) -> _DicomHeader:
    """Read the fields the decoder needs; raises AttributeError or ValueError on bad values."""
    window = _first_window(dataset)
    return _DicomHeader(
        rows=int(dataset.Rows),
        columns=int(dataset.Columns),
        frames=int(getattr(dataset, "NumberOfFrames", 1) or 1),
        samples=int(getattr(dataset, "SamplesPerPixel", 1)),
        bits_stored=int(getattr(dataset, "BitsStored", None) or dataset.BitsAllocated),
        signed=int(getattr(dataset, "PixelRepresentation", 0)) == 1,
        photometric=str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")),
        window=window,
        slope=float(getattr(dataset, "RescaleSlope", 1.0) or 1.0),
        intercept=float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0),
    )


def _unreadable_dicom(name: str, error: Exception) -> ImageError:
    # Only the exception's type is reported: the messages of pydicom and of float() can quote
    # header values, and header values can be patient data.
    return ImageError(
        f"image {name!r} is not a readable DICOM image ({type(error).__name__}); "
        "give an uncompressed or natively supported single-frame DICOM file"
    )


def _decode_dicom(data: bytes, max_pixels: int, name: str) -> DecodedImage:
    """Decode a single-frame gray DICOM file to [0, 1].

    The header is read and checked (pixel limit, one frame, one sample) before any pixel data
    is decoded. Deflated files are rejected, because pydicom inflates the whole data set in
    memory before anything can be checked. With a VOI window in the file, the rescale slope and
    intercept and then the first linear window are applied, which is what a DICOM viewer shows.
    Without one, stored values are divided by 2**BitsStored - 1 (signed values shifted first).
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise ImageError(
            f"image {name!r} is DICOM but pydicom is not installed; "
            "install it with pip install 'fragility-audit[engine]'"
        ) from None
    if DEFLATED_TRANSFER_SYNTAX in _file_meta_bytes(data):
        raise ImageError(
            f"image {name!r} is a deflated DICOM file, which is not accepted because it can "
            "inflate to any size; export it with an uncompressed or JPEG transfer syntax"
        )
    readable_errors = (InvalidDicomError, AttributeError, ValueError, KeyError, OSError, TypeError)
    # pydicom warns and logs about invalid values by quoting them, and a value can be patient
    # data: its warnings are suppressed here and its logger is limited to errors.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = _read_dicom_header(
                pydicom.dcmread(io.BytesIO(data), force=False, stop_before_pixels=True)
            )
    except readable_errors as error:
        raise _unreadable_dicom(name, error) from None
    _check_pixels(header.columns, header.rows * header.frames, max_pixels, name)
    if header.frames != 1 or header.samples != 1:
        raise ImageError(
            f"image {name!r} is DICOM with {header.frames} frame(s) and {header.samples} "
            "sample(s) per pixel; only single-frame gray images are supported, so export one frame"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = pydicom.dcmread(io.BytesIO(data), force=False).pixel_array
    except (*readable_errors, RuntimeError, NotImplementedError) as error:
        raise _unreadable_dicom(name, error) from None
    if values.shape != (header.rows, header.columns):
        raise ImageError(
            f"image {name!r} has pixel data of shape {values.shape}, not the "
            f"{header.rows}x{header.columns} its header gives; the file is corrupt"
        )
    return _dicom_to_unit_range(values.astype(np.float64), header, name)


def _dicom_to_unit_range(values: np.ndarray, header: _DicomHeader, name: str) -> DecodedImage:
    """Map stored DICOM values (H, W) to [0, 1] with the file's window, else its bit depth."""
    bits = header.bits_stored
    if header.window is not None:
        center, width = header.window
        # DICOM PS3.3 C.11.2.1.2: the modality LUT (rescale), then the linear VOI window.
        modality = values * header.slope + header.intercept
        if width <= 1:
            # A width of 1 is a threshold at center - 0.5; the general formula divides by 0.
            pixels = (modality > center - 0.5).astype(np.float64)
        else:
            pixels = np.clip((modality - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
        notes = [
            f"DICOM {header.photometric}, {bits} bits stored, rescaled and windowed with the "
            f"file's first window (center {center:g}, width {width:g})"
        ]
    else:
        notes = [f"DICOM {header.photometric}, {bits} bits stored, scaled by 2**{bits} - 1"]
        if header.signed:
            # Shift two's-complement values so the stored range starts at zero.
            values = values + 2 ** (bits - 1)
            notes.append("signed values shifted by 2**(BitsStored-1)")
        pixels = np.clip(values / (2**bits - 1), 0.0, 1.0)
    if header.photometric == "MONOCHROME1":
        pixels = 1.0 - pixels  # MONOCHROME1 shows the minimum value as white
        notes.append("MONOCHROME1 inverted so that bright means high")
    if not np.isfinite(pixels).all():
        raise ImageError(
            f"image {name!r} has rescale or window values that give non-finite pixels; "
            "check RescaleSlope, RescaleIntercept and the VOI window"
        )
    pixels = pixels.astype(np.float32)[:, :, None]
    return DecodedImage(pixels=pixels, source_format="DICOM", bit_depth=bits, notes=notes)


def _pil_to_array(image: Image.Image, name: str) -> tuple[np.ndarray, int, list[str]]:
    """Convert a loaded PIL image to (H, W, C) float32 in [0, 1], its bit depth and notes."""
    notes: list[str] = []
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        return values[:, :, None], 16, notes
    if mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ImageError(
                f"image {name!r} has 32-bit integer pixels outside 0..65535; "
                "give an 8- or 16-bit image"
            )
        return (values.astype(np.float32) / 65535.0)[:, :, None], 16, notes
    if mode == "F":
        raise ImageError(
            f"image {name!r} has floating-point pixels (mode F), whose range is unknown; "
            "save it as an 8- or 16-bit image"
        )
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        notes.append("alpha channel dropped")
    if mode in ("1", "L", "LA", "La"):
        gray = image.convert("L")
        return (np.asarray(gray, dtype=np.float32) / 255.0)[:, :, None], 8, notes
    if mode != "RGB":
        notes.append(f"converted from mode {mode} to RGB")
    rgb = image.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0, 8, notes


def load_image(
    source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> DecodedImage:
    """Decode an image file (or its bytes) to (H, W, C) floats in [0, 1].

    The pixel limit is checked from the header, before any pixel data is decoded.

    Args:
        source: file path or file contents.
        max_pixels: largest accepted width x height. Default 40 million.
        name: how the image is named in errors; default the file name, or "upload" for bytes.

    Raises:
        ImageError: empty, truncated, unreadable or unsupported file, or over ``max_pixels``.
    """
    if isinstance(source, Path):
        name = name or source.name
        try:
            data = source.read_bytes()
        except OSError as error:
            raise ImageError(f"image {name!r} could not be read: {error.strerror}") from None
    else:
        name = name or "upload"
        data = source
    if not data:
        raise ImageError(
            f"image {name!r} is empty (0 bytes); give a PNG, JPEG, TIFF, BMP, WebP or DICOM file"
        )
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return _decode_dicom(data, max_pixels, name)

    try:
        with warnings.catch_warnings():
            # Pillow warns about images over its own limit, which our limit (checked below from
            # the header) replaces. Past twice Pillow's limit, Image.open raises before that check.
            # NOTE: a FRAGILITY_MAX_IMAGE_PIXELS above 2 * Image.MAX_IMAGE_PIXELS (about 179
            # million pixels with Pillow's default) therefore cannot admit larger images.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image.width, image.height, max_pixels, name)
            if image.format not in PIL_FORMATS:
                raise ImageError(
                    f"image {name!r} is {image.format}, which is not supported; "
                    "give a PNG, JPEG, TIFF, BMP, WebP or DICOM file"
                )
            if getattr(image, "n_frames", 1) > 1:
                logger.info("image %s has %d frames; using the first", name, image.n_frames)
            image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow's message gives the image's pixel count and its limit.
        raise ImageError(
            f"image {name!r} is over Pillow's decompression-bomb limit ({error}); downscale it"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"file {name!r} is not a recognised image; give a PNG, JPEG, TIFF, BMP, WebP or "
            "DICOM file"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(
            f"image {name!r} could not be decoded ({error}); the file may be truncated or corrupt"
        ) from None
    if image.format == "TIFF" and image.mode == "RGB" and _tiff_bits(image) > 8:
        return _decode_rgb16_tiff(data, name)
    pixels, bit_depth, notes = _pil_to_array(image, name)
    if image.format == "PNG" and image.mode in ("RGB", "RGBA") and _png_bit_depth(data) == 16:
        # NOTE: Pillow decodes 16-bit-per-channel colour PNGs at 8 bits, so their extra
        # precision is lost; 16-bit gray PNGs and 16-bit RGB TIFFs keep it.
        notes.append("16-bit colour PNG decoded at 8 bits per channel")
    return DecodedImage(pixels=pixels, source_format=image.format, bit_depth=bit_depth, notes=notes)


def _tiff_bits(image: Image.Image) -> int:
    """Largest BitsPerSample (TIFF tag 258) of a TIFF image, 8 when the tag is missing."""
    bits = getattr(image, "tag_v2", {}).get(258, 8)
    return max(bits) if isinstance(bits, tuple) else int(bits)


def _png_bit_depth(data: bytes) -> int:
    """Bit depth from a PNG's IHDR chunk (byte 24 of the file)."""
    return data[24] if len(data) > 24 else 8


def _decode_rgb16_tiff(data: bytes, name: str) -> DecodedImage:
    """Decode a 16-bit RGB TIFF with tifffile, which Pillow would reduce to 8 bits."""
    try:
        import tifffile
    except ImportError:
        raise ImageError(
            f"image {name!r} is a 16-bit RGB TIFF but tifffile is not installed; "
            "install it with pip install tifffile"
        ) from None
    try:
        values = tifffile.imread(io.BytesIO(data), key=0)
    except (ValueError, OSError, tifffile.TiffFileError) as error:
        raise ImageError(
            f"image {name!r} could not be decoded as a 16-bit TIFF ({error})"
        ) from None
    if values.ndim != 3 or values.shape[2] not in (3, 4) or values.dtype != np.uint16:
        raise ImageError(
            f"image {name!r} is a TIFF with shape {values.shape} and type {values.dtype}; "
            "give a 16-bit RGB TIFF in contiguous (H, W, 3) layout"
        )
    notes = ["alpha channel dropped"] if values.shape[2] == 4 else []
    pixels = values[:, :, :3].astype(np.float32) / 65535.0
    return DecodedImage(pixels=pixels, source_format="TIFF", bit_depth=16, notes=notes)


def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W, C) floats to size = (height, width) with Pillow's bilinear filter.

    Pillow's bilinear filter widens its support when downscaling, so it also antialiases. Each
    channel is resized as a 32-bit float image, which keeps 16-bit precision.
    """
    height, width = size
    channels = [
        np.asarray(
            Image.fromarray(pixels[:, :, c], mode="F").resize((width, height), Image.BILINEAR)
        )
        for c in range(pixels.shape[2])
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def to_model_input(
    image: DecodedImage, channels: int, input_size: tuple[int, int]
) -> tuple[np.ndarray, list[str]]:
    """Convert a decoded image to a model's channels and size.

    Args:
        image: the decoded image.
        channels: 1 or 3, the model's input channels.
        input_size: (height, width) of the model's input, in pixels.

    Returns:
        (C, H, W) float32 array in [0, 1], and the list of conversions applied, for the report.
    """
    pixels = image.pixels
    conversions = list(image.notes)
    if pixels.shape[2] == 3 and channels == 1:
        # ITU-R 601-2 luma, the same weights as Pillow's convert("L").
        pixels = (pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
        conversions.append("RGB converted to gray (ITU-R 601-2 luma)")
    elif pixels.shape[2] == 1 and channels == 3:
        pixels = np.repeat(pixels, 3, axis=2)
        conversions.append("gray replicated to 3 channels")
    if image.size != tuple(input_size):
        conversions.append(
            f"resized from {image.size[0]}x{image.size[1]} to {input_size[0]}x{input_size[1]} "
            "(H x W, bilinear)"
        )
        pixels = resize_pixels(pixels, input_size)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32), conversions


def encode_pixels_only(image: DecodedImage) -> bytes:
    """Re-encode a decoded image as a PNG that contains pixels and nothing else.

    Gray images become 16-bit PNGs (so 12- and 16-bit data keep their precision), RGB images
    8-bit RGB PNGs. A DICOM header, EXIF block or text chunk, which can carry patient data, is
    not copied. The service stores this instead of the upload.
    """
    buffer = io.BytesIO()
    if image.pixels.shape[2] == 1:
        values = np.round(image.pixels[:, :, 0] * 65535).astype(np.uint16)
        Image.fromarray(values).save(buffer, format="PNG")  # uint16 -> mode I;16
    else:
        values = np.round(image.pixels * 255).astype(np.uint8)
        Image.fromarray(values).save(buffer, format="PNG")
    return buffer.getvalue()
