"""Reading images from disk, with one clear error per bad file."""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
MAX_IMAGE_PIXELS = 200_000_000  # larger images are refused as possible decompression bombs


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


def load_image(path, image_size: int) -> np.ndarray:
    """The image at `path` as (image_size, image_size, 3) uint8 RGB, or ImageError."""
    path = str(path)
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not an image")
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF
                image = _to_rgb(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: too many pixels (over {MAX_IMAGE_PIXELS:,}), refused as a decompression bomb") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: unreadable image ({error})") from None
    resized = image.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


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
