"""The one image reader: decode safely, composite RGBA on a background, bring to a size.

Every part of kerasemote reads images through :func:`read_image` (or :func:`shape_image` for an
image already decoded): data preparation, training and the classifier, so a file gives the same
pixels wherever it is read. Two ways to reach a size:

* ``fit="crop"``: cut the largest centred box of the target's shape, then resize (training and
  the classifier: what the model learns from is what the judge sees).
* ``fit="pad"``: scale to fit inside, pad with the background (data preparation: a whole emoji,
  never a cut one).

Transparency is composited on the background before resizing, so edges never darken.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageColor

from kerasemote import storage
from kerasemote.data.records import BadImageError

Color = tuple[int, int, int]
Size = Union[int, tuple[int, int]]  # a square side, or (height, width)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
FITS = ("crop", "pad")
RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
WHITE: Color = (255, 255, 255)
# The most pixels an image may have (8192 x 8192); checked on the header before decoding. PIL's own
# default only warns up to twice its limit and then decodes, so a small PNG could ask for gigabytes.
MAX_IMAGE_PIXELS = 8192 * 8192
_DATA_URI = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


def parse_color(value: str | Color) -> Color:
    """``"white"``, ``"#ffcc00"`` or ``(255, 204, 0)`` -> an RGB tuple."""
    if isinstance(value, str):
        try:
            return ImageColor.getrgb(value)[:3]
        except ValueError:
            raise ValueError(f"Unknown colour {value!r}; use a name like 'white' or '#rrggbb'.") from None
    if len(value) != 3 or not all(0 <= int(c) <= 255 for c in value):
        raise ValueError(f"A colour needs three values in [0, 255]; got {value!r}.")
    return tuple(int(c) for c in value)


def open_image_file(path: str | os.PathLike) -> Image.Image:
    """Decode an image file (local, Drive or gs://) fully; every failure becomes ``BadImageError``."""
    try:
        with storage.open_read(path) as file:
            return _decode(file, os.fspath(path))
    except FileNotFoundError:
        raise BadImageError("missing file", os.fspath(path)) from None
    except OSError as error:
        raise BadImageError("unreadable image", f"{os.fspath(path)}: {error}") from None


def open_image_bytes(data: bytes, origin: str) -> Image.Image:
    """Decode image bytes; ``origin`` names the file/row in the error."""
    if not data:
        raise BadImageError("empty image", origin)
    return _decode(io.BytesIO(data), origin)


def _decode(file: BinaryIO, origin: str) -> Image.Image:
    """Open lazily, check the header's pixel count against ``MAX_IMAGE_PIXELS``, then decode."""
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit; the check below refuses such images with a clearer line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
        with image:
            _check_pixels(image.width, image.height, origin)
            image.load()
            return image.convert("RGBA") if image.mode == "P" else image.copy()
    except BadImageError:
        raise
    except Image.DecompressionBombError as error:
        raise BadImageError("image too large", f"{origin}: {error}") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImageError("unreadable image", f"{origin}: {error}") from None


def _check_pixels(width: int, height: int, origin: str) -> None:
    """Refuse an image of more than ``MAX_IMAGE_PIXELS`` pixels (``BadImageError`` naming it)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImageError(
            "image too large",
            f"{origin}: {width} x {height} = {width * height:,} pixels, above the limit of {MAX_IMAGE_PIXELS:,}",
        )


def decode_data_uri(value: str, origin: str) -> bytes:
    """``"data:image/png;base64,iVBOR..."`` (or bare base64) -> bytes."""
    payload = _DATA_URI.sub("", value.strip(), count=1)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadImageError("bad base64", f"{origin}: {error}") from None


def to_rgba(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGBA (palette transparency and LA kept as alpha)."""
    return image if image.mode == "RGBA" else image.convert("RGBA")


def trim_transparent(image: Image.Image) -> Image.Image:
    """Crop to the bounding box of pixels with any opacity; fully transparent -> error."""
    image = to_rgba(image)
    box = image.getchannel("A").getbbox()
    if box is None:
        raise BadImageError("blank image", "every pixel is transparent")
    return image.crop(box)


def composite(image: Image.Image, background: Color = WHITE) -> Image.Image:
    """RGBA over a solid background -> RGB."""
    image = to_rgba(image)
    base = Image.new("RGBA", image.size, background + (255,))
    return Image.alpha_composite(base, image).convert("RGB")


def fit_square(
    image: Image.Image, size: int, background: Color = WHITE, margin: float = 0.0, resample: str = "lanczos"
) -> Image.Image:
    """Scale to fit ``size`` x ``size`` keeping the aspect ratio, pad with the background.

    Args:
        image: any mode; transparency is composited on ``background``.
        size: output side in pixels.
        background: padding and transparency colour.
        margin: blank border on each side, as a fraction of ``size``.
        resample: a name of :data:`RESAMPLING`.

    Returns:
        An RGB image of ``size`` x ``size``.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}.")
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5); got {margin}.")
    image = to_rgba(image)
    inner = max(1, round(size * (1.0 - 2.0 * margin)))
    scale = inner / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if new_size != image.size:
        # Resampling with premultiplied alpha would be ideal; compositing first avoids dark fringes.
        image = composite(image, background).resize(new_size, _resampling(resample))
    canvas = Image.new("RGB", (size, size), background)
    offset = ((size - new_size[0]) // 2, (size - new_size[1]) // 2)
    canvas.paste(composite(image, background), offset)
    return canvas


def crop_to(image: Image.Image, size: Size, background: Color = WHITE, resample: str = "lanczos") -> Image.Image:
    """Cut the largest centred box of the target's shape, then resize to it.

    Args:
        image: any mode; transparency is composited on ``background``.
        size: a square side, or (height, width).
        background: transparency colour.
        resample: a name of :data:`RESAMPLING`.

    Returns:
        An RGB image of the target size.
    """
    height, width = _height_width(size)
    rgb = composite(image, background)
    w, h = rgb.size
    if w * height > h * width:  # wider than the target: keep the full height
        crop_w, crop_h = max(1, round(h * width / height)), h
    else:
        crop_w, crop_h = w, max(1, round(w * height / width))
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    rgb = rgb.crop((left, top, left + crop_w, top + crop_h))
    return rgb if rgb.size == (width, height) else rgb.resize((width, height), _resampling(resample))


def shape_image(
    image: Image.Image,
    size: Size | None,
    fit: str = "crop",
    background: str | Color = WHITE,
    resample: str = "lanczos",
    trim: bool = False,
    margin: float = 0.0,
) -> Image.Image:
    """The one image recipe: optional trim to opaque pixels, composite, bring to ``size``.

    Args:
        image: a decoded image, any mode.
        size: a square side, (height, width), or None to keep the image's own size.
        fit: ``"crop"`` (centre box of the target's shape) or ``"pad"`` (whole image, padded; square only).
        background: colour under transparent pixels and of the padding.
        resample: a name of :data:`RESAMPLING`.
        trim: first crop to the bounding box of the pixels with any opacity.
        margin: ``fit="pad"`` only: blank border on each side, as a fraction of ``size``.

    Returns:
        An RGB image.
    """
    if fit not in FITS:
        raise ValueError(f"fit is {fit!r}; expected one of {FITS}.")
    color = parse_color(background)
    if trim:
        image = trim_transparent(image)
    if size is None:
        return composite(image, color)
    if fit == "pad":
        if not _is_side(size):
            raise ValueError(f"fit='pad' makes squares: size must be one side in pixels; got {size!r}.")
        return fit_square(image, int(size), color, margin, resample)
    if margin:
        raise ValueError(f"margin is {margin}; only fit='pad' leaves a margin.")
    return crop_to(image, size, color, resample)


def read_image(
    source: str | os.PathLike | bytes,
    size: Size | None,
    fit: str = "crop",
    background: str | Color = WHITE,
    resample: str = "lanczos",
    trim: bool = False,
    margin: float = 0.0,
) -> np.ndarray:
    """Read one image file (local, Drive or gs://) or encoded bytes as uint8 RGB pixels.

    Args:
        source: a path, or the bytes of an encoded image.
        size, fit, background, resample, trim, margin: as :func:`shape_image`.

    Returns:
        uint8 (H, W, 3): (size, size, 3) for a square ``size``.

    Raises:
        BadImageError: a missing or unreadable file (a ``ValueError`` naming it).

    Example:
        >>> read_image("happy/1f600.png", 64).shape
        (64, 64, 3)
    """
    image = open_image_bytes(source, "image bytes") if isinstance(source, bytes) else open_image_file(source)
    return np.asarray(shape_image(image, size, fit, background, resample, trim, margin), dtype=np.uint8)


def prepare_image(
    image: Image.Image, size: int, background: Color = WHITE, trim: bool = False, margin: float = 0.0
) -> Image.Image:
    """Data preparation's recipe: optional trim to opaque pixels, composite, fit (pad) to a square."""
    return shape_image(image, size, "pad", background, trim=trim, margin=margin)


def _is_side(size: object) -> bool:
    return isinstance(size, (int, np.integer))


def _height_width(size: Size) -> tuple[int, int]:
    height, width = (size, size) if _is_side(size) else size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive pixels; got {size!r}.")
    return int(height), int(width)


def _resampling(name: str) -> Image.Resampling:
    try:
        return RESAMPLING[name]
    except KeyError:
        raise ValueError(f"resample is {name!r}; expected one of {sorted(RESAMPLING)}.") from None
