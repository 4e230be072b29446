"""The photo models the cross-domain benchmarks compare, by name (the baseline is built, not bundled)."""

from __future__ import annotations

import fewshot_sdk as fs
from fewshot_sdk.models.backbones import PHOTO_PREPROCESS


def frozen_imagenet() -> fs.Learner:
    learner = fs.create("protonet", backbone={"name": "efficientnet-lite0", "pretrained": True}, feature_norm="l2")
    return learner.freeze()


def shipped_at_224() -> fs.Learner:
    shipped = fs.load("protonet-photos")
    learner = type(shipped)(shipped.config, shipped.backbone_config, PHOTO_PREPROCESS)
    learner.load_state_dict(shipped.state_dict())
    learner.domain = shipped.domain
    return learner.eval().freeze()


MODELS = {
    "frozen-imagenet": frozen_imagenet,
    "protonet-photos": lambda: fs.load("protonet-photos"),
    "protonet-photos@224": shipped_at_224,
}
