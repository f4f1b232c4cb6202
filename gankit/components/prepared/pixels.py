"""One image file's bytes to uint8 pixels of a fixed square size, the way `data prepare` does.

Decoding follows the file's EXIF orientation; transparency is laid on a background colour;
16-bit and 32-bit greyscale are scaled (not clipped) to 8 bits; CMYK goes through its ICC
profile where it carries one. JPEGs decode at a reduced scale first (`Image.draft`, exact
powers of two done by libjpeg), then one resize does crop or pad and scale together
(Lanczos, after a box reduction for large factors).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

REDUCING_GAP = 3.0  # PIL: box-reduce first when shrinking by more than this factor


@dataclass(frozen=True)
class Shape:
    """What every prepared image becomes: `size` x `size`, `channels` 1 (L) or 3 (RGB), the
    square taken by `crop` (center: the central square; pad: the whole image on `background`)."""

    size: int
    channels: Literal[1, 3] = 3
    crop: Literal["center", "pad"] = "center"
    background: tuple[int, int, int] = (255, 255, 255)

    @property
    def mode(self) -> str:
        """The PIL mode of the result."""
        return "L" if self.channels == 1 else "RGB"


class NotImage(ValueError):
    """The bytes are no image in a format PIL reads."""


def parse_colour(text: str) -> tuple[int, int, int]:
    """'white', 'black' or '#rrggbb' as an RGB triple (ValueError otherwise)."""
    named = {"white": (255, 255, 255), "black": (0, 0, 0)}
    if text.lower() in named:
        return named[text.lower()]
    digits = text.removeprefix("#")
    if len(digits) != 6 or not all(char in "0123456789abcdefABCDEF" for char in digits):
        raise ValueError(f"{text!r} is not a colour: give white, black or #rrggbb")
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def _eight_bit(image: Any) -> Any:
    """A 16- or 32-bit integer or float greyscale image as 8-bit L (full range kept)."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values = values * 255.0 if values.size and values.max() <= 1.0 else values
    else:
        values = values / 257.0  # 16-bit range; 32-bit 'I' files hold 16-bit values in practice
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _cmyk_to_rgb(image: Any) -> Any:
    """CMYK through its embedded ICC profile to sRGB where it has one, else PIL's formula."""
    from PIL import ImageCms

    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below
    return image.convert("RGB")


def _flatten(image: Any, shape: Shape) -> Any:
    """`image` in the result's mode: transparency laid on the background, deep greyscale and
    CMYK converted."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _eight_bit(image)
    elif image.mode == "CMYK":
        image = _cmyk_to_rgb(image)
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        "transparency" in image.info and image.mode in ("P", "L", "RGB")
    )
    if transparent:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*shape.background, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    return image if image.mode == shape.mode else image.convert(shape.mode)


def _square(image: Any, shape: Shape) -> Any:
    """`image` (already in the result's mode) cropped or padded to a square and resized."""
    from PIL import Image

    width, height = image.size
    size = shape.size
    if shape.crop == "center":
        side = min(width, height)
        left, top = round((width - side) / 2.0), round((height - side) / 2.0)
        if (width, height) == (size, size):
            return image
        return image.resize(
            (size, size),
            Image.Resampling.LANCZOS,
            box=(left, top, left + side, top + side),
            reducing_gap=REDUCING_GAP,
        )
    scale = size / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    if inner != (width, height):
        image = image.resize(inner, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    fill = shape.background if shape.channels == 3 else _grey(shape.background)
    canvas = Image.new(shape.mode, (size, size), fill)
    canvas.paste(image, ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return canvas


def _grey(colour: tuple[int, int, int]) -> int:
    """The L value PIL gives an RGB colour (ITU-R 601-2 luma)."""
    red, green, blue = colour
    return (red * 299 + green * 587 + blue * 114 + 500) // 1000


def decode(data: bytes, shape: Shape) -> np.ndarray:
    """Image file bytes as uint8 pixels (channels, size, size). Raises NotImage for bytes PIL
    does not recognise, and PIL's own errors (OSError, ValueError, ...) for broken files."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise NotImage("not an image in a format PIL reads") from None
    with image:
        if image.format == "JPEG":
            image.draft(image.mode, (shape.size, shape.size))  # keeps both sides >= size
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        pixels = np.asarray(_square(_flatten(image, shape), shape), dtype=np.uint8)
    if pixels.ndim == 2:
        return pixels[None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
