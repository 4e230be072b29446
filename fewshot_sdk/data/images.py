"""Turning user images (paths, PIL images, arrays) into the tensor a model consumes.

torchvision is deliberately not used (no build of it fits a CPU-only torch), so the
transform is written with PIL + torch: convert to the model's channels, resize to
its resolution with antialiasing, scale to [0, 1], normalise with the checkpoint's
mean and std. Whatever an image went through at training time it goes through here.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fewshot_sdk.config import PreprocessConfig
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
        return _image_from_array(item)
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


def _image_from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InputError(f"a numpy image must be HxW or HxWxC with C in 1, 3, 4; got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise InputError("the numpy image contains NaN or infinite values")
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


class Preprocessor:
    """The one transform between an image and a model, built from a checkpoint's ``PreprocessConfig``."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        channels = config.channels
        self._mean = torch.tensor(config.mean, dtype=torch.float32).expand(channels).reshape(channels, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).expand(channels).reshape(channels, 1, 1)

    def image_to_tensor(self, image: Image.Image) -> torch.Tensor:
        """Channels, resize, [0, 1], normalise: [C, H, W] float32."""
        mode = "L" if self.config.channels == 1 else "RGB"
        if image.mode in ("RGBA", "LA", "P") or (image.mode != mode):
            image = _flatten_alpha(image).convert(mode)
        height, width = self.config.image_size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.copy())
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return (tensor - self._mean) / self._std

    def __call__(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """A batch [B, C, H, W] from paths / PIL images / arrays."""
        if len(images) == 0:
            raise InputError("no images given")
        return torch.stack([self.image_to_tensor(load_image(item)) for item in images])

    def check_batch(self, batch: torch.Tensor, argument: str = "images") -> torch.Tensor:
        """Validate a tensor batch that claims to be model-ready; returns it as float32."""
        expected = self.config.input_shape
        if not isinstance(batch, torch.Tensor):
            raise InputError(f"{argument} must be a torch.Tensor, got {type(batch).__name__}")
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise InputError(
                f"{argument} has shape {tuple(batch.shape)} but the model takes [B, {expected[0]}, "
                f"{expected[1]}, {expected[2]}] (channels, height, width); pass images or file paths "
                "to have them resized, or call task.preprocess(images)"
            )
        if batch.shape[0] == 0:
            raise InputError(f"{argument} is an empty batch")
        if not batch.is_floating_point():
            raise InputError(f"{argument} must be a floating-point tensor, got {batch.dtype}")
        if not torch.isfinite(batch).all():
            raise InputError(f"{argument} contains NaN or infinite values")
        return batch.float() if batch.dtype != torch.float32 else batch


def _flatten_alpha(image: Image.Image) -> Image.Image:
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
