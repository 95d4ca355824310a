"""Opening people's image files: decoded fully and safely, upright, as grey values in [0, 1].

Every way a file can be wrong (missing, empty, a folder, not an image, truncated, a decompression
bomb, unreadable) is one ImageError naming the file. numpy and Pillow only.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps

from ..errors import UserError, one_line

# Larger images are refused before decoding: a phone photo is ~12-50 MP, and a
# crafted file can claim billions of pixels in a few bytes.
MAX_PIXELS = 50_000_000
# A JPEG decoded for reading its digit needs no more pixels a side than this (preprocess works at 2048).
DECODE_SIDE = 2048
# The only formats ever opened: raster images decoded by Pillow's own code. Pillow would also hand an EPS
# file to Ghostscript (an outside program that runs the file's PostScript), so nothing is identified by
# content alone: a file in any other format is "not an image mnistlab reads". (A phone's MPO file opens
# as JPEG.)
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM", "PCX", "TGA", "ICO")
NOT_AN_IMAGE = "not an image (or not a raster format mnistlab reads, such as PNG or JPEG)"


class ImageError(UserError):
    """An image that cannot be read, or holds no digit."""


def open_image(path, grey: bool = False) -> Image.Image:
    """Read an image file fully (a corrupt file fails here, not later), upright per its EXIF tag.

    grey=True lets a colour JPEG be decoded straight to grey (its luminance channel, the same grey as
    converting after), and one much larger than the work needs at a half, a quarter or an eighth of its
    size: the decoder then skips the colour conversion and most of the pixels.
    """
    name = os.fspath(path)
    try:
        info = os.stat(name)  # once, for all the checks below (as os.path.exists, a failure is "no such file")
    except (OSError, ValueError):
        raise ImageError(f"{name}: no such file") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):  # reading a FIFO would wait for a writer forever
        raise ImageError(f"{name}: not a regular file (a pipe or a device?)")
    if info.st_size == 0:
        raise ImageError(f"{name}: file is empty")
    return _decode(name, name, grey)


def open_image_bytes(data: bytes, name: str = "upload") -> Image.Image:
    """As open_image, for an image held in memory (an upload to `mnistlab serve`); `name` names it in errors."""
    if not data:
        raise ImageError(f"{name}: empty (no image bytes)")
    return _decode(io.BytesIO(data), name)


def _decode(source, name: str, grey: bool = False) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice that; a warning is still a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=RASTER_FORMATS) as img:
                _check_size(name, img.size)
                if grey and img.format == "JPEG" and img.mode == "RGB":
                    img.draft("L", _draft_size(img.size))
                img.load()  # the first frame of an animation: fine for a digit
                try:
                    upright = ImageOps.exif_transpose(img) if _turned(img) else None
                except Exception:  # a broken orientation tag is no reason to refuse the picture
                    upright = None
                return upright or img  # loaded: still whole after the file is closed
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: {NOT_AN_IMAGE}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image is too large (Pillow refuses it as a possible decompression bomb)") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except MemoryError:
        raise ImageError(f"{name}: image is too large to decode in memory") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        # Pillow's plugins report damaged data with any of these.
        raise ImageError(f"{name}: image is truncated or corrupt ({one_line(exc)})") from None


def _turned(img: Image.Image) -> bool:
    """Does the EXIF orientation tag say the picture must be turned or flipped to stand upright?"""
    try:
        return img.getexif().get(0x0112, 1) != 1
    except Exception:  # a damaged EXIF block: taken as no tag
        return False


def _draft_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size to ask the JPEG decoder for: the picture shrunk by the whole factor that brings its longer side
    to DECODE_SIDE or under, as preprocess would shrink it after decoding. The decoder scales by 1/2, 1/4 or
    1/8 only, to no less than the size asked: a 12-megapixel phone photo (4032x3024) comes out at half size,
    as preprocess wants it, without the full decode (50 ms against 68-100 ms for a test JPEG of that size);
    a factor of 3 gets a half, the rest of the way left to preprocess."""
    shrink = max(1, math.ceil(max(size) / DECODE_SIDE))
    return math.ceil(size[0] / shrink), math.ceil(size[1] / shrink)


def _check_size(name: str, size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has zero size ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: image is too large ({width}x{height} = {width * height / 1e6:.0f} megapixels; "
                         f"the limit is {MAX_PIXELS / 1e6:.0f})")


def to_grayscale(img: Image.Image) -> np.ndarray:
    """Luminance in [0, 1] as float32 HxW, whatever the mode; see _composite for transparency."""
    if img.width == 0 or img.height == 0:
        raise ImageError(f"image has zero size ({img.width}x{img.height})")
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _scale_wide(np.asarray(img))
    if mode == "La":
        img, mode = img.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return _composite(_luminance(rgba[..., :3]), rgba[..., 3])
    if mode == "L":
        return np.asarray(img, dtype=np.float32) / np.float32(255)
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    try:
        rgb = img.convert("RGB")
    except ValueError:
        rgb = img.convert("L").convert("RGB")
    return _luminance(np.asarray(rgb, dtype=np.float32) / 255.0)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601 weights, as Pillow's convert("L"), but without rounding to 8 bits.
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _composite(lum: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Lay the picture on paper: where alpha is 0 is background, what is opaque is ink.

    Drawing apps export transparent pixels as black (0,0,0,0), so simply dropping
    alpha turns a black-on-transparent digit into black on black. The paper is the
    colour that contrasts with the opaque pixels: white under dark ink, black under light.
    """
    if alpha.min() >= 1.0:
        return lum
    opaque = alpha > 0.5
    if not opaque.any():
        return np.zeros_like(lum)  # all background: mnist_frame will report no ink
    paper = 1.0 if np.median(lum[opaque]) < 0.5 else 0.0
    return (lum * alpha + paper * (1.0 - alpha)).astype(np.float32)


def _scale_wide(values: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float pixels to [0, 1]; the mode does not say the range, the values do."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise ImageError("the image holds no pixel values (all NaN or infinite)")
    low, high = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, low).astype(np.float32)  # a NaN pixel is background, not an error
    if low < 0 or high > 65535:
        return (values - low) / max(high - low, 1e-12)
    if values.dtype.kind == "f" and high <= 1.0:
        scale = 1.0
    elif high <= 255:
        scale = 255.0
    else:
        scale = 65535.0
    return np.clip(values / scale, 0.0, 1.0).astype(np.float32)
