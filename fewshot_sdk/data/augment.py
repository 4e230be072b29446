"""Random views of model-ready images, for fine-tuning on a support set of a few photos.

Test-time fine-tuning on five photos a class overfits them at once; random views (a crop
of 60-100% of the area at another aspect, brightness, contrast and saturation changes, and a
mirror image where the domain allows: a mirrored sign or letter changes meaning) make every step
see other images of the same classes. The images are model-ready tensors (``Preprocessor``'s
output), so a view is computed in pixel units and normalised back; a seeded ``torch.Generator``
makes the views of one task reproducible and independent of every other thread's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fewshot_sdk.config import PreprocessConfig

#: Fraction of the image's area a crop keeps, and the crop's aspect ratio range (log-uniform).
CROP_AREA = (0.6, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
#: Largest relative change of brightness, contrast and saturation.
JITTER = 0.2


def random_views(
    images: torch.Tensor, preprocess: PreprocessConfig, views: int, flips: bool, generator: torch.Generator
) -> torch.Tensor:
    """[N * views, C, H, W]: each image as it is, then ``views - 1`` random views of it (image-major)."""
    n, channels, height, width = images.shape
    out = [images]
    mean = torch.tensor(preprocess.mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, dtype=images.dtype).view(1, -1, 1, 1)
    for _ in range(views - 1):
        pixels = images * std + mean  # [0, 1] pixel units
        pixels = _random_crops(pixels, generator)
        pixels = _jitter(pixels, channels, generator)
        if flips:
            mirrored = torch.rand(n, generator=generator) < 0.5
            pixels = torch.where(mirrored.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
        out.append((pixels.clamp(0, 1) - mean) / std)
    return torch.stack(out, 1).reshape(n * views, channels, height, width)


def _random_crops(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image cropped to a random box and resized back, by one affine grid sample for the batch."""
    n = len(pixels)
    area = torch.empty(n).uniform_(*CROP_AREA, generator=generator)
    aspect = torch.exp(torch.empty(n).uniform_(math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1]), generator=generator))
    scale_x = torch.sqrt(area * aspect).clamp(max=1.0)
    scale_y = torch.sqrt(area / aspect).clamp(max=1.0)
    shift_x = (1 - scale_x) * (2 * torch.rand(n, generator=generator) - 1)
    shift_y = (1 - scale_y) * (2 * torch.rand(n, generator=generator) - 1)
    theta = torch.zeros(n, 2, 3, dtype=pixels.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, shift_x
    theta[:, 1, 1], theta[:, 1, 2] = scale_y, shift_y
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(pixels: torch.Tensor, channels: int, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (for colour images) saturation, each scaled by 1 ± up to ``JITTER``."""
    n = len(pixels)

    def factor() -> torch.Tensor:
        return (1 + JITTER * (2 * torch.rand(n, generator=generator) - 1)).view(-1, 1, 1, 1).to(pixels.dtype)

    pixels = pixels * factor()
    grey = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = grey + (pixels - grey) * factor()
    if channels == 3:
        luma = (0.299 * pixels[:, 0:1] + 0.587 * pixels[:, 1:2] + 0.114 * pixels[:, 2:3]).expand_as(pixels)
        pixels = luma + (pixels - luma) * factor()
    return pixels
