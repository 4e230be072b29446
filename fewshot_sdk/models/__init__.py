"""Feature extractors and the bundled pretrained checkpoints (``zoo/<name>/``)."""

from fewshot_sdk.models.backbones import Conv4, ResNet12, WrappedBackbone, build_backbone

__all__ = ["Conv4", "ResNet12", "WrappedBackbone", "build_backbone"]
