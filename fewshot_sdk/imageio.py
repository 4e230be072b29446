"""Opening user images safely, with PIL alone (no torch).

Shared by the torch preprocessing (:mod:`fewshot_sdk.data.images`) and the torch-free
ONNX runtime (:mod:`fewshot_sdk.export.runtime`), so both refuse the same bad files with
the same one-line messages and composite transparency the same way.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fewshot_sdk.errors import InputError

ImageLike = str | os.PathLike | Image.Image | np.ndarray

#: Refuse images above this many pixels before decoding them (decompression bombs).
MAX_IMAGE_PIXELS = 64_000_000

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def load_image(item: ImageLike) -> Image.Image:
    """Open one image, with errors that name the file; refuses decompression bombs."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        return image_from_array(item)
    if not isinstance(item, (str, os.PathLike)):
        raise InputError(
            f"cannot read an image from a {type(item).__name__}: pass a file path, a PIL image or a numpy array"
        )
    path = Path(item)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file but {path} is a folder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"{path} is {width}x{height} pixels, above the {MAX_IMAGE_PIXELS:,}-pixel limit; downscale it first"
                )
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path} is too large to decode safely ({exc}); downscale it first") from None
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image PIL can read (png, jpg, bmp, gif, tiff, webp)") from None
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    return image


def image_from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InputError(f"a numpy image must be HxW or HxWxC with C in 1, 3, 4; got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise InputError("the numpy image contains NaN or infinite values")
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images on white, as a viewer shows them (not on black)."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        return background.convert("RGB")
    return image


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
