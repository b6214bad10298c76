"""Write generated images: one PNG per image, labelled grids, GIFs; read images to start from.

Reading goes through the project's one reader, :func:`kerasemote.data.images.read_image`.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kerasemote import storage
from kerasemote.data.images import read_image


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def save_images(images: np.ndarray, out_dir: str, prefix: str = "image") -> list[str]:
    """Write uint8 (N, H, W, 3) images as ``{prefix}_{i:03d}.png``; returns the paths."""
    storage.makedirs(out_dir)
    paths = []
    for i, image in enumerate(np.asarray(images)):
        path = storage.join(out_dir, f"{prefix}_{i:03d}.png")
        storage.write_bytes(path, _encode(Image.fromarray(image)))
        paths.append(path)
    return paths


def make_grid(
    images: np.ndarray,
    cols: int | None = None,
    labels: Sequence[str] | None = None,
    padding: int = 2,
) -> Image.Image:
    """Tile uint8 (N, H, W, 3) images into one picture, with an optional caption under each.

    Args:
        images: the images.
        cols: columns; default a near-square layout.
        labels: one caption per image (e.g. interpolation fractions).
        padding: white pixels between tiles.
    """
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    label_h = 14 if labels else 0
    grid = Image.new("RGB", (cols * (w + padding) + padding, rows * (h + label_h + padding) + padding), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, image in enumerate(images):
        x = padding + (i % cols) * (w + padding)
        y = padding + (i // cols) * (h + label_h + padding)
        grid.paste(Image.fromarray(image[..., :3]), (x, y))
        if labels:
            draw.text((x + 2, y + h + 1), str(labels[i]), fill="black", font=font)
    return grid


def save_grid(images: np.ndarray, path: str, **kwargs) -> str:
    """``make_grid`` written as a PNG (local, Drive or gs://)."""
    storage.write_bytes(path, _encode(make_grid(images, **kwargs)))
    return path


def save_gif(images: np.ndarray, path: str, duration_ms: int = 200, bounce: bool = True) -> str:
    """An animated GIF of a sequence (e.g. an interpolation sweep), played forth and back."""
    frames = [Image.fromarray(image) for image in np.asarray(images)]
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    storage.write_bytes(path, data)
    return path


def load_image(path: str, size: tuple[int, int] | None = None, background: str = "white") -> np.ndarray:
    """Read an image as uint8 (H, W, 3); transparency is composited on ``background``.

    Args:
        path: local, Drive or gs:// image file.
        size: (height, width) to bring it to (centre box of that shape, resized), if given.
        background: colour under transparent pixels.
    """
    return read_image(path, size, fit="crop", background=background)
