"""Bundled pretrained backbone weights (no download at run time); licences in NOTICE beside them."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
#: EfficientNet-Lite0 trained on ImageNet-1k by Google (Apache-2.0), float16, classifier removed.
EFFICIENTNET_LITE0_IMAGENET = HERE / "efficientnet-lite0-imagenet.safetensors"


def imagenet_weights(module: torch.nn.Module) -> None:
    """Load the bundled ImageNet weights into an ``EfficientNetLite0`` (float16 on disk, cast on copy)."""
    tensors = load_file(str(EFFICIENTNET_LITE0_IMAGENET))
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise RuntimeError(f"{EFFICIENTNET_LITE0_IMAGENET} lacks {missing[:3]}: reinstall fewshot-sdk")
