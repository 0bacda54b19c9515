"""Uploaded images: size limits, decoding as a check, zip expansion, storing under new ids.

Client file names are never stored, logged or echoed: an upload is named in errors by its form
field (``image``, ``files[3]``). What is stored is a PNG of the decoded pixels, without the
upload's metadata, as ``inputs/{generated id}/input.png``.
Nothing reaches the storage directory until every file of the request passed its checks.
"""

from __future__ import annotations

import io
import logging
import stat
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from fastapi import UploadFile
from PIL import Image

from app.errors import ApiError
from fragility.settings import Settings
from models.hashing import bytes_sha256
from worker.audit.images import ImageError, encode_pixels_only, load_image
from worker.store import Storage

ZIP_MAGIC = b"PK\x03\x04"

DICOM_MAGIC_OFFSET = 128  # a DICOM Part 10 file has a 128-byte preamble, then b"DICM"
DEFLATED_DICOM_UID = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
# The file meta group, which names the transfer syntax, starts at byte 132 and is short.
DICOM_META_SCAN_BYTES = 64 * 1024


@dataclass
class CheckedImage:
    """An upload that decoded as an image, held in memory until the request is accepted.

    Attributes:
        data: what is stored: a PNG of the decoded pixels only (see encode_pixels_only), so that
            a DICOM header, EXIF block or text chunk of the upload never reaches the storage.
        extension: file extension of ``data`` (".png").
        sha256: hex SHA-256 of the upload as sent; clients match batch results to their files
            with it. The report's ``input.sha256`` is that of the stored PNG instead.
    """

    data: bytes
    extension: str
    sha256: str


def read_upload(
    upload: UploadFile | None,
    field: str,
    limit: int,
    setting: str = "FRAGILITY_MAX_UPLOAD_BYTES",
) -> bytes:
    """Read an uploaded file, at most ``limit`` bytes; ``setting`` names the limit in errors.

    Raises:
        ApiError: 422 when the file is missing or empty, 413 when it is over ``limit``.
    """
    if upload is None:
        raise ApiError(422, f"{field} is required: attach a file in this form field", field)
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413,
            f"{field}: the file is over the upload limit of {limit} bytes ({setting}); send a "
            f"smaller file or raise {setting}",
            field,
        )
    if not data:
        raise ApiError(422, f"{field}: the file is empty (0 bytes)", field)
    return data


def check_image(data: bytes, field: str, settings: Settings) -> CheckedImage:
    """Decode ``data`` to check that it is a supported image within the pixel limit.

    Raises:
        ApiError: 422 naming ``field`` when the data is not a usable image.
    """
    try:
        decoded = load_image(data, max_pixels=settings.max_image_pixels, name=field)
    except ImageError as error:
        raise ApiError(422, str(error), field) from None
    return CheckedImage(encode_pixels_only(decoded), ".png", bytes_sha256(data))


def _dicom_header_pixels(data: bytes, max_pixels: int) -> int:
    """Return Rows x Columns x NumberOfFrames of a DICOM file, read without its pixel data."""
    try:
        import pydicom
    except ImportError:
        return 0
    if DEFLATED_DICOM_UID in data[:DICOM_META_SCAN_BYTES]:
        # pydicom inflates a deflated data set completely to read its header.
        return max_pixels
    # pydicom warns and logs about invalid values by quoting them, and a header value can be
    # patient data.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
            return int(dataset.Rows) * int(dataset.Columns) * frames
    except Exception:  # pydicom raises many types on malformed files; check_image reports them
        return 0


def header_pixels(data: bytes, max_pixels: int) -> int:
    """Return the pixels an image's header declares, without decoding any pixel data.

    Returns 0 for a file whose header cannot be read, which check_image then rejects, and
    ``max_pixels`` for a deflated DICOM file, whose header cannot be read without inflating it.
    """
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return _dicom_header_pixels(data, max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow warns about large images and malformed tags; check_image decides on both.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.width * image.height
    except Exception:  # Pillow raises many types on malformed files; check_image reports them
        return 0


def check_batch_pixels(contents: Sequence[bytes], field: str, settings: Settings) -> None:
    """Reject a batch whose images declare more pixels in all than FRAGILITY_MAX_BATCH_PIXELS.

    Runs before any image is decoded. An image is counted at most at the per-image limit:
    check_image rejects a larger one by its own field.

    Raises:
        ApiError: 422 naming ``field``.
    """
    per_image = settings.max_image_pixels
    total = sum(min(header_pixels(data, per_image), per_image) for data in contents)
    if total > settings.max_batch_pixels:
        raise ApiError(
            422,
            f"{field}: the {len(contents)} images have {total} pixels in all, over the batch "
            f"limit of {settings.max_batch_pixels} pixels (FRAGILITY_MAX_BATCH_PIXELS); split "
            "the batch or raise FRAGILITY_MAX_BATCH_PIXELS",
            field,
        )


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _escapes(name: str) -> bool:
    """Return True when a member name is absolute or climbs out of the archive's folder."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return True
    return ".." in PurePosixPath(normalised).parts


def _name_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """Return the components of a member name, which are () for an empty name or a lone dot."""
    return PurePosixPath(info.filename.replace("\\", "/")).parts


def _is_skipped(info: zipfile.ZipInfo) -> bool:
    """Directories, macOS resource forks and hidden files are not images of the batch."""
    if info.is_dir():
        return True
    parts = _name_parts(info)
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")


def expand_zip(data: bytes, field: str, settings: Settings) -> list[bytes]:
    """Return the contents of the image members of a zip archive, in archive order.

    Checks every member name before reading any content: an absolute name, a ``..`` component
    or a symbolic link rejects the whole archive. Sizes are checked from the headers and again
    while reading, so a member that lies about its size cannot exhaust memory.

    Raises:
        ApiError: 422 for an unreadable, encrypted or unsafe archive or one with no files or too
            many; 413 for a member or a total over the byte limits.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise ApiError(
            422, f"{field}: the zip archive could not be read ({error})", field
        ) from None
    for index, info in enumerate(members):
        if _escapes(info.filename) or _is_symlink(info):
            raise ApiError(
                422,
                f"{field}: zip member {index} has a path that escapes the archive's folder "
                "(absolute, containing '..', or a symbolic link); the archive was rejected",
                field,
            )
        # An empty name is checked first: ZipInfo.is_dir() raises IndexError on it.
        if not info.filename or (not _name_parts(info) and not info.is_dir()):
            raise ApiError(
                422,
                f"{field}: zip member {index} has an empty name (or '.'); the archive was "
                "rejected, so give every file in it a name",
                field,
            )
    images = [info for info in members if not _is_skipped(info)]
    if not images:
        raise ApiError(422, f"{field}: the zip archive contains no files", field)
    if len(images) > settings.max_batch_images:
        raise ApiError(
            422,
            f"{field}: the zip archive has {len(images)} files, over the batch limit of "
            f"{settings.max_batch_images} (FRAGILITY_MAX_BATCH_IMAGES); split the batch or "
            "raise FRAGILITY_MAX_BATCH_IMAGES",
            field,
        )
    total = 0
    contents = []
    for position, info in enumerate(images):
        member_field = f"{field}[{position}]"
        if info.flag_bits & 0x1:
            raise ApiError(422, f"{member_field}: the zip member is encrypted", member_field)
        if info.file_size > settings.max_upload_bytes:
            raise _member_too_large(member_field, settings)
        try:
            with archive.open(info) as handle:
                content = handle.read(settings.max_upload_bytes + 1)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as error:
            raise ApiError(
                422, f"{member_field}: the zip member could not be read ({error})", member_field
            ) from None
        if len(content) > settings.max_upload_bytes:
            raise _member_too_large(member_field, settings)
        total += len(content)
        if total > settings.max_batch_upload_bytes:
            raise ApiError(
                413,
                f"{field}: the uncompressed archive is over the batch limit of "
                f"{settings.max_batch_upload_bytes} bytes (FRAGILITY_MAX_BATCH_UPLOAD_BYTES); "
                "split the batch or raise FRAGILITY_MAX_BATCH_UPLOAD_BYTES",
                field,
            )
        if not content:
            raise ApiError(422, f"{member_field}: the file is empty (0 bytes)", member_field)
        contents.append(content)
    return contents


def _member_too_large(field: str, settings: Settings) -> ApiError:
    return ApiError(
        413,
        f"{field}: the file is over the upload limit of {settings.max_upload_bytes} bytes "
        "(FRAGILITY_MAX_UPLOAD_BYTES); send a smaller file or raise FRAGILITY_MAX_UPLOAD_BYTES",
        field,
    )


def is_zip(data: bytes) -> bool:
    """Return True when ``data`` starts like a zip archive."""
    return data[:4] == ZIP_MAGIC


def store_images(images: list[CheckedImage], storage: Storage) -> list[str]:
    """Write checked images to the storage directory; return their new input ids in order.

    On an error part-way, removes the inputs already written and re-raises.
    """
    input_ids: list[str] = []
    try:
        for image in images:
            input_ids.append(storage.store_input(image.data, image.extension))
    except BaseException:
        for input_id in input_ids:
            storage.delete_input(input_id)
        raise
    return input_ids
