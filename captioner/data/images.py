"""Reading images from disk, with one clear error per bad file."""

from __future__ import annotations

import glob
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
MAX_IMAGE_PIXELS = 200_000_000  # larger images are refused as possible decompression bombs
DISPLAY_SIDE = 512  # longer side of images drawn in overlays and reports


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16- or 32-bit greyscale: scale to 8 bits instead of clipping to white.
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.max() > 255 else 255.0
        image = Image.fromarray(np.uint8(np.clip(values / top * 255, 0, 255)))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)  # transparent parts show as white
    return image.convert("RGB")


def open_image(path) -> Image.Image:
    """The image at `path` as an upright RGB Pillow image, or ImageError naming the file and the problem."""
    path = str(path)
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not an image")
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file")
    return _decode(path, path, MAX_IMAGE_PIXELS)


def open_image_bytes(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An image file's bytes (an upload) as an upright RGB Pillow image, or ImageError naming `name`; images of
    more than `max_pixels` are refused from their header, before they are decoded."""
    if not data:
        raise ImageError(f"{name}: empty file")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name: str, max_pixels: int) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.width * image.height > max_pixels:
                    raise ImageError(f"{name}: {image.width} x {image.height} pixels is over the limit of {max_pixels:,}")
                image.load()
                image = ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF
                return _to_rgb(image)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: too many pixels (over {MAX_IMAGE_PIXELS:,}), refused as a decompression bomb") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{name}: unreadable image ({error})") from None


def squeezed(image: Image.Image, image_size: int) -> np.ndarray:
    """The whole image squeezed into the encoder's square: (image_size, image_size, 3) uint8."""
    return np.asarray(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)


def load_image(path, image_size: int) -> np.ndarray:
    """The image at `path` as (image_size, image_size, 3) uint8 RGB, as the encoder sees it, or ImageError."""
    return squeezed(open_image(path), image_size)


def fit_for_display(image: Image.Image, max_side: int = DISPLAY_SIDE) -> np.ndarray:
    """The whole image, aspect ratio kept, at most `max_side` pixels on its longer side: (H, W, 3) uint8.

    The encoder saw the image squeezed into a square, so its attention grid covers this
    whole picture, stretched the same way.
    """
    scale = min(1.0, max_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(size, Image.BILINEAR) if scale < 1 else image, dtype=np.uint8)


def load_images(path, image_size: int, max_side: int = DISPLAY_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(encoder input (S, S, 3), display image (H, W, 3) with its own aspect ratio), decoding the file once."""
    image = open_image(path)
    return squeezed(image, image_size), fit_for_display(image, max_side)


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Image paths from files, directories (their images, sorted) and glob patterns.

    Returns (paths, errors); an error names an input that matched nothing.
    """
    paths, errors = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                errors.append(f"{item}: directory holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        elif glob.has_magic(item):
            found = sorted(glob.glob(item))
            if not found:
                errors.append(f"{item}: pattern matched no files")
            paths.extend(found)
        else:
            paths.append(item)  # load_image reports it as missing, in input order
    return paths, errors


# ---- augmentation that cannot change what a caption says ----------------------------------------------------

JITTER = 0.15  # brightness, contrast and saturation each scaled by a factor in [1 - JITTER, 1 + JITTER]
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma


def jitter_colours(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo (S, S, 3) uint8 a little brighter or darker, flatter or punchier, paler or more saturated.

    Chosen because a caption stays true under it: no flips ("left" and "right"), no crops (an object at the
    edge, and the boxes attention supervision reads), no hue shifts (colour words).
    """
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    pixels = image.astype(np.float32) * brightness
    pixels = (pixels - pixels.mean()) * contrast + pixels.mean()
    grey = (pixels @ GREY)[..., None]
    pixels = grey + (pixels - grey) * saturation
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
