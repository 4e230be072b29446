"""Turning user images (paths, PIL images, arrays) into the tensor a model consumes.

torchvision is deliberately not used (no build of it fits a CPU-only torch). Everything up to
[0, 1] pixels is :func:`fewshot_sdk.imageio.to_model_pixels`, shared with the ONNX runtime so an
exported model is fed exactly what this one is (and what training fed it); here the pixels are
only normalised with the checkpoint's mean and std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image

from fewshot_sdk.config import PreprocessConfig
from fewshot_sdk.errors import InputError
from fewshot_sdk.imageio import ImageLike, is_image_file, load_image, to_model_pixels

__all__ = ["ImageLike", "Preprocessor", "is_image_file", "load_image"]


#: Normalised pixels lie within about ±10; far beyond, a network's activations overflow into NaN answers.
MAX_MODEL_VALUE = 1e4


class Preprocessor:
    """The one transform between an image and a model, built from a checkpoint's ``PreprocessConfig``."""

    def __init__(self, config: PreprocessConfig, watch: Callable[[Image.Image], None] | None = None) -> None:
        """``watch``: shown every image as decoded, before it is resized (a learner's domain check)."""
        self.config = config
        self.watch = watch
        channels = config.channels
        self._mean = torch.tensor(config.mean, dtype=torch.float32).expand(channels).reshape(channels, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).expand(channels).reshape(channels, 1, 1)

    def image_to_tensor(self, image: Image.Image) -> torch.Tensor:
        """Orientation, channels, resize (and crop), [0, 1], normalise: [C, H, W] float32."""
        config = self.config
        array = to_model_pixels(image, config.channels, config.image_size, config.resize_shorter)
        tensor = torch.from_numpy(array)  # a fresh, writable array: no copy needed
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return (tensor - self._mean) / self._std

    def __call__(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """A batch [B, C, H, W] from paths / PIL images / arrays."""
        if len(images) == 0:
            raise InputError("no images given")
        return torch.stack([self.image_to_tensor(self.watched(load_image(item))) for item in images])

    def watched(self, image: Image.Image) -> Image.Image:
        if self.watch is not None:
            self.watch(image)
        return image

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
        low, high = torch.aminmax(batch)  # one pass: NaN propagates, infinity is the largest value
        peak = max(-float(low), float(high))
        if peak != peak or peak == float("inf"):
            raise InputError(f"{argument} contains NaN or infinite values")
        if peak > MAX_MODEL_VALUE:
            raise InputError(
                f"{argument} holds values up to {peak:.3g}, not normalised pixels (within about ±10): "
                "pass images or file paths, or call task.preprocess(images)"
            )
        return batch.float() if batch.dtype != torch.float32 else batch
