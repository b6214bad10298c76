"""Image preparation: decode safely, composite RGBA on a background, trim, fit to a square."""

from __future__ import annotations

import base64
import binascii
import io
import os
import re

from PIL import Image, ImageColor

from kerasemote.data.records import BadImageError

Color = tuple[int, int, int]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
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
    """Decode an image file fully, turning every decoder failure into ``BadImageError``."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGBA") if image.mode == "P" else image.copy()
    except FileNotFoundError:
        raise BadImageError("missing file", str(path)) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadImageError("unreadable image", f"{path}: {error}") from None


def open_image_bytes(data: bytes, origin: str) -> Image.Image:
    """Decode image bytes; ``origin`` names the file/row in the error."""
    if not data:
        raise BadImageError("empty image", origin)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGBA") if image.mode == "P" else image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadImageError("unreadable image", f"{origin}: {error}") from None


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


def composite(image: Image.Image, background: Color = (255, 255, 255)) -> Image.Image:
    """RGBA over a solid background -> RGB."""
    image = to_rgba(image)
    base = Image.new("RGBA", image.size, background + (255,))
    return Image.alpha_composite(base, image).convert("RGB")


def fit_square(
    image: Image.Image, size: int, background: Color = (255, 255, 255), margin: float = 0.0
) -> Image.Image:
    """Scale to fit ``size`` x ``size`` keeping the aspect ratio, pad with the background.

    Args:
        image: any mode; transparency is composited on ``background``.
        size: output side in pixels.
        background: padding and transparency colour.
        margin: blank border on each side, as a fraction of ``size``.

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
        image = composite(image, background).resize(new_size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), background)
    offset = ((size - new_size[0]) // 2, (size - new_size[1]) // 2)
    canvas.paste(composite(image, background), offset)
    return canvas


def prepare_image(
    image: Image.Image, size: int, background: Color = (255, 255, 255), trim: bool = False, margin: float = 0.0
) -> Image.Image:
    """The one image recipe: optional trim to opaque pixels, composite, fit to a square."""
    if trim:
        image = trim_transparent(image)
    return fit_square(image, size, background, margin)
