"""Turning one Pillow image of any mode into an S x S RGB array.

Conversions (all end in 8-bit RGB):
- RGB: as is. L, 1, P, CMYK, YCbCr and the rest: Pillow's convert("RGB").
- Transparency (RGBA, LA, PA, P or L/RGB with a transparent colour): composited on white, so fully
  transparent pixels become (255, 255, 255).
- 16-bit grey (I;16, I;16B, I;16L) and 32-bit integer (I): taken as 16-bit, 0..65535, and scaled to
  0..255 by round(v / 257), so 65535 -> 255 and 32896 -> 128 (Pillow's own convert would clip at 255).
  Values outside 0..65535 are clipped first.
- 32-bit float (F): taken as 0..1 and scaled by 255 (clipped).
EXIF orientation is applied by the caller before the conversion (PIL.ImageOps.exif_transpose).

Resizing: the shorter side is scaled to S and the centre S x S square is kept, in one Pillow resize
with a source box (bicubic, anti-aliased when shrinking).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> mode "RGB" (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        grey = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        grey = np.rint(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, image_size: int) -> np.ndarray:
    """Scale the shorter side to S, keep the centre square.

    Args:
        image: mode "RGB", W x H with min(W, H) >= 1.
        image_size: S.

    Returns:
        (S, S, 3) uint8.
    """
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2.0, (height - side) / 2.0
    box = (left, top, left + side, top + side)
    square = image.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(square, dtype=np.uint8)


def resize_square(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize square images to S x S with Pillow (bilinear, anti-aliased when shrinking).

    Args:
        images: (N, s, s, 3) uint8.
        image_size: S.

    Returns:
        (N, S, S, 3) uint8; the input itself when s == S.
    """
    if images.shape[1] == image_size:
        return images
    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for i, array in enumerate(images):
        resized = Image.fromarray(array).resize((image_size, image_size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(resized)
    return out
