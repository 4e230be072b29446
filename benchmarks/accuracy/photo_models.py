"""The photo models the cross-domain benchmarks compare, by name (the baseline is built, not bundled).

Since commit 6a9e7ab the bundled ``protonet-photos`` is itself ``interpolated-0.5@224-sqrt``; the variants
built from ``fs.load("protonet-photos")`` (``@224``, ``interpolated-*``) were measured on the meta-fine-tuned
model bundled before it: run them from commit 1eed1d9 to reproduce those rows. Since side levels it is
``levels-0.5-0.25``: the same weights, the last two blocks' outputs beside the head's (``head-only`` is the
default before them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import fewshot_sdk as fs
from fewshot_sdk.models.backbones import PHOTO_PREPROCESS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # how the bundled model was made
from interpolate_weights import averaged_weights
from with_side_levels import side_levelled


def frozen_imagenet(feature_norm: str = "l2") -> fs.Learner:
    backbone = {"name": "efficientnet-lite0", "pretrained": True}
    return fs.create("protonet", backbone=backbone, feature_norm=feature_norm).freeze()


def shipped_at_224() -> fs.Learner:
    shipped = fs.load("protonet-photos")
    learner = type(shipped)(shipped.config, shipped.backbone_config, PHOTO_PREPROCESS)
    learner.load_state_dict(shipped.state_dict())
    learner.domain = shipped.domain
    return learner.eval().freeze()


def interpolated(weight: float, feature_norm: str = "l2", preprocess: object = PHOTO_PREPROCESS) -> fs.Learner:
    """The shipped weights averaged with the ImageNet ones they started from, at 224 px (WiSE-FT, Wortsman
    et al. 2022: ``weight`` * meta-fine-tuned + (1 - ``weight``) * ImageNet), which keeps much of what
    fine-tuning adds on its own domain and more of the start's robustness elsewhere."""
    shipped = fs.load("protonet-photos")
    start = fs.create("protonet", backbone={"name": "efficientnet-lite0", "pretrained": True}, feature_norm="l2")
    config = shipped.config.model_copy(update={"feature_norm": feature_norm})
    learner = type(shipped)(config, shipped.backbone_config, preprocess)
    learner.load_state_dict(averaged_weights(shipped.state_dict(), start.state_dict(), weight))
    learner.domain = shipped.domain
    return learner.eval().freeze()


def with_side_levels(*weights: float) -> fs.Learner:
    """The shipped weights, with the pooled outputs of the last blocks kept beside the head's features
    (``BackboneConfig.side_levels``: the last block's weight first), each L2-normalised and weighted."""
    shipped = fs.load("protonet-photos")
    learner = side_levelled(shipped, weights)
    learner.domain = shipped.domain
    return learner.eval().freeze()


MODELS = {
    "frozen-imagenet": frozen_imagenet,
    "protonet-photos": lambda: fs.load("protonet-photos"),
    "protonet-photos@224": shipped_at_224,
    "interpolated-0.5@224": lambda: interpolated(0.5),
    "interpolated-0.25@224": lambda: interpolated(0.25),
    "interpolated-0.75@224": lambda: interpolated(0.75),
    "frozen-imagenet-sqrt": lambda: frozen_imagenet("sqrt-l2"),
    "interpolated-0.25@224-sqrt": lambda: interpolated(0.25, "sqrt-l2"),
    "interpolated-1@224-sqrt": lambda: interpolated(1.0, "sqrt-l2"),
    "interpolated-0.5@224-sqrt": lambda: interpolated(0.5, "sqrt-l2"),
    "interpolated-0.5@192-sqrt": lambda: interpolated(
        0.5, "sqrt-l2", PHOTO_PREPROCESS.model_copy(update={"image_size": (192, 192), "resize_shorter": 219})
    ),
    "head-only": with_side_levels,  # the shipped weights without side levels: the default before them
    "levels-1": lambda: with_side_levels(1.0),
    "levels-0.5": lambda: with_side_levels(0.5),
    "levels-0.5-0.25": lambda: with_side_levels(0.5, 0.25),
    "levels-0.75-0.25": lambda: with_side_levels(0.75, 0.25),
    "levels-0.5-0.5": lambda: with_side_levels(0.5, 0.5),
    "levels-0.75-0.5": lambda: with_side_levels(0.75, 0.5),
    "levels-1-0.5": lambda: with_side_levels(1.0, 0.5),
    "levels-1-0.75": lambda: with_side_levels(1.0, 0.75),
}
