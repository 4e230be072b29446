"""The learner a training run starts from: new, new on another model's backbone, or a trained one continued.

A new learner's backbone and preprocessing follow from the data, so that a run on the user's photos never
normalises them with Omniglot's statistics: the sinusoid family gets MAML's 1-40-40-1 ReLU regressor, Omniglot the
method's own defaults, and class folders (unless an ImageNet backbone or explicit statistics are asked for) the
channels, mean and std of their training classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fewshot_sdk.errors import InputError
from fewshot_sdk.io.zoo import create, method_class
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.train.recipes import folder_preprocess_settings, is_omniglot, warm_start, with_backbone_from
from fewshot_sdk.train.regression import is_sinusoid

#: The method of a new learner when none is named.
DEFAULT_METHOD = "protonet"
#: The backbone that brings its own (ImageNet) preprocessing.
IMAGENET_BACKBONE = "efficientnet-lite0"


def starting_learner(
    data: str | Path,
    method: str | None = None,
    init: str | Path | None = None,
    backbone: str | None = None,
    settings: dict[str, Any] | None = None,
    split_seed: int | None = None,
    backbone_from: str | Path | None = None,
) -> Learner:
    """A new ``method`` learner for ``data``, one on ``backbone_from``'s backbone, or ``init``'s weights.

    ``settings`` are method settings (and preprocessing keys for a new learner); for ``init`` they change the trained
    learner's settings (``warm_start``). ``split_seed`` picks the training classes whose image statistics a new
    learner on class folders normalises with (0 when None, the default split).
    """
    settings = dict(settings or {})
    if backbone_from is not None:
        if init is not None or backbone is not None:
            raise InputError(
                "--backbone-from starts a new model's backbone: it cannot be combined with --init or --backbone"
            )
        return with_backbone_from(backbone_from, method or DEFAULT_METHOD, settings)
    if init is None:
        if is_sinusoid(data):
            settings.setdefault("task", "regression")
            backbone = backbone or "mlp"
        elif (
            not is_omniglot(data) and backbone != IMAGENET_BACKBONE and not {"channels", "mean", "std"} & set(settings)
        ):
            settings.update(folder_preprocess_settings(data, 0 if split_seed is None else split_seed))
        return create(method or DEFAULT_METHOD, backbone=backbone, **settings)
    if backbone is not None:
        raise InputError(f"--backbone cannot be combined with --init {init}: the backbone comes from the checkpoint")
    learner = warm_start(init, settings)
    if method is not None and method_class(method).method != learner.method:
        raise InputError(
            f"--method {method} does not match --init {init}, a {learner.method} checkpoint; drop --method"
        )
    return learner
