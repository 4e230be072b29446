"""Verification training for Siamese networks: same/different pairs and Koch's affine distortions.

Koch, Zemel & Salakhutdinov (2015), "Affine distortions": each training image is
distorted by a random affine map T = (theta, rho_x, rho_y, s_x, s_y, t_x, t_y) with
theta in [-10, 10] degrees, shear rho in [-0.3, 0.3], scale s in [0.8, 1.2] and
translation t in [-2, 2] pixels of a 105-pixel image; each component is included
with probability 1/2. Pairs are drawn from the training classes of an episode, as
many "same" as "different" pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Koch's ranges. Translation is scaled from pixels of a 105x105 image to a fraction of the image.
MAX_ROTATION_DEG = 10.0
MAX_SHEAR = 0.3
SCALE_RANGE = (0.8, 1.2)
MAX_TRANSLATION = 2.0 / 105.0


def random_affine_matrices(n: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, 2, 3] affine maps (rotation @ shear @ scale, plus translation) in ``affine_grid``'s units."""

    def component(low: float, high: float, neutral: float) -> torch.Tensor:
        """n uniform draws, each kept with probability 1/2, else ``neutral`` (the identity)."""
        values = low + (high - low) * torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)
        keep = torch.rand(values.shape, generator=generator, device=values.device) < 0.5
        return torch.where(keep, values, torch.full_like(values, neutral))

    theta = component(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 0.0) * math.pi / 180
    shear_x, shear_y = component(-MAX_SHEAR, MAX_SHEAR, 0.0), component(-MAX_SHEAR, MAX_SHEAR, 0.0)
    scale_x, scale_y = component(*SCALE_RANGE, 1.0), component(*SCALE_RANGE, 1.0)
    # affine_grid coordinates span [-1, 1], so a fraction f of the image is 2f.
    shift_x = component(-MAX_TRANSLATION, MAX_TRANSLATION, 0.0) * 2
    shift_y = component(-MAX_TRANSLATION, MAX_TRANSLATION, 0.0) * 2

    cos, sin = torch.cos(theta), torch.sin(theta)
    zeros, ones = torch.zeros_like(theta), torch.ones_like(theta)
    rotation = torch.stack([cos, -sin, sin, cos], -1).view(n, 2, 2)
    shear = torch.stack([ones, shear_x, shear_y, ones], -1).view(n, 2, 2)
    scale = torch.stack([scale_x, zeros, zeros, scale_y], -1).view(n, 2, 2)
    linear = rotation @ shear @ scale
    return torch.cat([linear, torch.stack([shift_x, shift_y], -1)[:, :, None]], dim=2)


def affine_distort(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Koch's random affine distortion of every image of a [B, C, H, W] batch (border pixels fill the edges).

    Border padding repeats Omniglot's white background instead of inventing black ink.
    """
    matrices = random_affine_matrices(len(images), images, generator)
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def verification_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [T, T] over ordered pairs of distinct images: (same class, different class)."""
    same = labels[:, None] == labels[None, :]
    distinct = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & distinct, ~same


def balanced_verification_loss(pair_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with "same" and "different" pairs weighted equally.

    Koch trains on balanced same/different pairs; averaging each kind separately over
    every pair of the episode is that objective's expectation, with less variance
    than drawing one "different" pair per "same" pair.
    """
    same, different = verification_pairs(labels)
    targets = same.to(pair_logits.dtype)
    losses = F.binary_cross_entropy_with_logits(pair_logits, targets, reduction="none")
    if not bool(same.any()):
        return losses[different].mean()
    return 0.5 * losses[same].mean() + 0.5 * losses[different].mean()
