"""Reading one image file without letting it cost more than its own part.

A file on a line PC's disk may be anything: a good image, a truncated one, a decoding bomb
whose header declares gigapixels, a sparse file, a FIFO, a device, a float TIFF full of NaN.
:func:`read_image` turns every one of them into either a ``uint8`` image (``(H, W)`` gray or
``(H, W, 3)`` BGR) or a reason, and never raises, blocks, or allocates more than its limits:

1. ``stat`` first: only a regular file is opened (a FIFO would block the reader, a device may
   have side effects on open); one larger than ``max_file_bytes`` is refused unread.
2. The header only (Pillow's ``Image.open`` reads a few KB and decodes nothing): the format is
   known from the content, not the extension; a declared size above ``max_pixels`` is refused
   *before* anything is decoded.
3. Decoding: JPEG with libjpeg-turbo (``simplejpeg``) in strict mode, so a JPEG cut short is
   refused even when it ends in an end-of-image marker (libjpeg only warns about that and
   fills the rest with grey), while bytes after a complete JPEG's end marker are ignored;
   every other format with OpenCV (``cv2.imdecode``), whose errors are caught.
4. Conversion to ``uint8``: 16-bit by OpenCV's own rule (the high byte), float in [0, 1]
   scaled by 255, alpha dropped; anything else (NaN, floats outside [0, 1], signed or 32-bit
   integers, multi-page files, odd channel counts) is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import warnings

import cv2
import numpy as np
import simplejpeg  # type: ignore[import-untyped]  # no py.typed; decode_jpeg(bytes, ...) -> ndarray
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
"""100 MP: above any line camera's frame, far below what makes a line PC swap."""
DEFAULT_MAX_FILE_MB = 256.0

_JPEG_FORMATS = {"JPEG", "MPO"}  # MPO: a camera's JPEG with extra pictures after its primary one


@dataclasses.dataclass(frozen=True, slots=True)
class ImageLimits:
    """What one file may cost before it is refused: declared pixels and bytes on disk."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 1024 * 1024)


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as text that can be stored and printed: bytes that are not valid UTF-8 in a
    file name appear as ``\\xNN`` escapes instead of lone surrogates."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, for the reason; ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_image(
    path: str | os.PathLike[str], limits: ImageLimits = ImageLimits()
) -> tuple[np.ndarray | None, str | None]:
    """Decode one image file: ``(image, None)`` or ``(None, reason)``; never raises.

    The reason starts with the file's (printable) path and says what is wrong with it."""
    name = display_path(path)
    try:
        return _read(path, name, limits)
    except MemoryError:
        return None, f"{name}: out of memory while decoding; lower the folder's max_pixels"
    except Exception as exc:  # noqa: BLE001 - a hostile file costs its own part, never the source
        return None, f"{name}: cannot be read as an image ({type(exc).__name__}: {exc})"


def _read(path: str | os.PathLike[str], name: str, limits: ImageLimits) -> tuple[np.ndarray | None, str | None]:
    try:
        st = os.stat(path)  # follows a symlink: what it points to is what would be read
    except FileNotFoundError:
        if os.path.lexists(path):
            return None, f"{name}: is a broken symlink (its target {display_path(os.readlink(path))} does not exist)"
        return None, f"{name}: disappeared before it was read"
    except OSError as exc:
        return None, f"{name}: cannot stat: {exc.strerror}"
    kind = _kind_of(st.st_mode)
    if kind is not None:
        return None, f"{name}: is {kind}, not an image file; not opened"
    if st.st_size == 0:
        return None, f"{name}: is empty (0 bytes)"
    if st.st_size > limits.max_file_bytes:
        return None, (
            f"{name}: is {st.st_size / 2**20:.1f} MB, above the source's max_file_mb "
            f"({limits.max_file_bytes / 2**20:.0f} MB); not read"
        )
    try:
        # O_NONBLOCK: should the file have been swapped for a FIFO since the stat, opening it
        # must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return None, f"{name}: cannot open: {exc.strerror}"
    with os.fdopen(fd, "rb") as f:
        kind = _kind_of(os.fstat(fd).st_mode)
        if kind is not None:
            return None, f"{name}: is {kind}, not an image file"
        header = _header(f, name, limits)
        if isinstance(header, str):
            return None, header
        fmt, mode, (width, height) = header
        f.seek(0)
        data = f.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        return None, f"{name}: grew above the source's max_file_mb while it was read"
    if fmt in _JPEG_FORMATS:
        image, error = _decode_jpeg(data, mode, name)
    else:
        image, error = _decode_opencv(data, fmt, name)
    if image is None:
        return None, error
    if image.shape[:2] != (height, width):
        return None, (
            f"{name}: decoded as {image.shape[1]}x{image.shape[0]} px, but its {fmt} header "
            f"declares {width}x{height}: a corrupt or ambiguous file"
        )
    return _to_uint8(image, fmt, name)


def _header(f, name: str, limits: ImageLimits) -> tuple[str, str, tuple[int, int]] | str:
    """The format, mode and declared size from the header alone, or the reason to refuse."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own bomb limit (~89 MP); ours is max_pixels, checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(f)
    except Image.DecompressionBombError as exc:
        return f"{name}: refused before decoding: {exc}"
    except UnidentifiedImageError:
        return f"{name}: is not a decodable image (not a known image format, or its header is corrupt)"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        return f"{name}: is not a decodable image (corrupt header: {exc})"
    with im:
        fmt, mode, (width, height) = im.format or "?", im.mode, im.size
        if width <= 0 or height <= 0:
            return f"{name}: its {fmt} header declares an empty image ({width}x{height})"
        if width * height > limits.max_pixels:
            return (
                f"{name}: its {fmt} header declares {width}x{height} = {width * height / 1e6:.1f} MP, "
                f"above the source's max_pixels ({limits.max_pixels / 1e6:g} MP); refused before decoding"
            )
        if fmt not in _JPEG_FORMATS and getattr(im, "is_animated", False):
            return f"{name}: is a multi-page (or animated) {fmt}; one part is one image: split the pages into files"
    return fmt, mode, (width, height)


def _decode_jpeg(data: bytes, mode: str, name: str) -> tuple[np.ndarray | None, str | None]:
    colorspace = {"L": "GRAY", "RGB": "BGR", "CMYK": "CMYK"}.get(mode)
    if colorspace is None:
        return None, f"{name}: is a JPEG of mode {mode}, which this source does not read"
    try:
        # strict: libjpeg's "premature end of data segment" and other recoverable errors raise,
        # where OpenCV and Pillow would return a part-grey image as if it were good.
        image = simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True)
    except ValueError as exc:
        return None, f"{name}: is a truncated or corrupt JPEG ({exc})"
    if colorspace == "GRAY":
        return image[:, :, 0], None
    if colorspace == "CMYK":
        # Validated above; OpenCV knows the (Adobe, inverted) CMYK to BGR conversion.
        return _decode_opencv(data, "JPEG", name)
    return image, None


def _decode_opencv(data: bytes, fmt: str, name: str) -> tuple[np.ndarray | None, str | None]:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return None, f"{name}: OpenCV refused to decode this {fmt}: {reason}"
    if image is None:
        return None, f"{name}: is not a decodable image (corrupt or truncated {fmt} data)"
    return image, None


def _to_uint8(image: np.ndarray, fmt: str, name: str) -> tuple[np.ndarray | None, str | None]:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        return None, f"{name}: has {image.shape[2]} channels; only gray, BGR and BGRA images can be inspected"
    if image.ndim not in (2, 3):
        return None, f"{name}: decoded to an array of shape {image.shape}, not an image"
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # OpenCV's own 16-to-8-bit rule (IMREAD_COLOR does the same)
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            return None, f"{name}: is a floating-point {fmt} with NaN or infinite pixels; cannot be inspected"
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            return None, (
                f"{name}: is a floating-point {fmt} with values in [{lo:g}, {hi:g}]; only floats in "
                "[0, 1] have a known 8-bit meaning: export it as 8- or 16-bit"
            )
        image = np.rint(image * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None, (
            f"{name}: has {image.dtype} samples (signed or 32-bit integers); only 8- and 16-bit "
            "unsigned or [0, 1] float images can be inspected"
        )
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image), None
