"""``fs.load``, ``fs.create`` and ``fs.available``: getting a learner by name, path or recipe."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from fewshot_sdk.checkpoint import (
    CONFIG_FILE,
    LEARNER_FORMAT,
    WEIGHTS_FILE,
    LearnerConfig,
    check_weights_header,
    load_state_into,
    read_json_model,
    read_weights,
)
from fewshot_sdk.config import BackboneConfig, PreprocessConfig, describe_settings_error, describe_validation_error
from fewshot_sdk.errors import CheckpointError, InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.models.backbones import default_preprocess
from fewshot_sdk.models.frozen import Engine, EngineFactory
from fewshot_sdk.registry import registered_methods, zoo_names, zoo_path
from fewshot_sdk.task.domain import name_learner

PREPROCESS_KEYS = ("image_size", "channels", "mean", "std", "resize_shorter")
#: What ``load_task(..., runtime=)`` runs a task with, and ``load(..., runtime=)`` a learner's backbone inference.
RUNTIMES = ("torch", "onnxruntime")


def load(
    name_or_path: str | os.PathLike,
    backbone: nn.Module | None = None,
    device: str | None = None,
    *,
    runtime: str = "torch",
    threads: int = 0,
) -> Learner:
    """A pretrained learner, frozen for inference: a bundled zoo name (``"protonet-omniglot"``) or a checkpoint folder.

    ``backbone``: only for checkpoints trained with a custom ``nn.Module``. The learner comes back
    frozen (``Learner.freeze``): its inference twin, batch norm folded, is built here once for every
    ``adapt``. ``runtime="onnxruntime"``: the twin embeds supports and queries in onnxruntime on the
    CPU, traced and checked here once; gradients and training run torch. ``threads``: onnxruntime's
    intra-op threads (0: its default).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise InputError(f"threads must be an integer >= 0 (0: onnxruntime's default), got {threads!r}")
    if check_runtime(runtime) == "onnxruntime" and device is not None and str(device) != "cpu":
        raise InputError(f"runtime='onnxruntime' runs the backbone on the CPU, not on {device}; drop device=")
    check_device(device)
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        names = ", ".join(zoo_names()) or "none installed"
        raise CheckpointError(
            f"fs.load takes a bundled model name or a checkpoint folder, got {name_or_path!r}; bundled: {names}"
        )
    path = Path(name_or_path)
    if path.exists():
        learner = load_learner(path, backbone)
    elif (bundled := zoo_path(str(name_or_path))) is not None:
        learner = load_learner(bundled, backbone)
        name_learner(learner, str(name_or_path))  # warnings then call it by its bundled name
    else:
        names = ", ".join(zoo_names()) or "none installed"
        raise CheckpointError(f"no checkpoint folder or bundled model named {str(name_or_path)!r}; bundled: {names}")
    learner = learner.to(device) if device else learner
    return learner.freeze(onnxruntime_engine(threads) if runtime == "onnxruntime" else None)


def check_device(device: object, choices: str = "'cpu' or 'cuda'") -> torch.device | None:
    """A device this machine has: ``"cpu"``, or ``"cuda"`` / ``"cuda:N"`` where CUDA is available (None passes).

    ``choices`` names what the caller accepts, for the messages (the CLI also takes ``auto``).
    """
    if device is None:
        return None
    try:
        parsed = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use {choices}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: this torch build or machine has no usable CUDA device; use cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r} is not supported; use {choices}")
    return parsed


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; choose one of {', '.join(map(repr, RUNTIMES))}")
    return runtime


def onnxruntime_engine(threads: int) -> EngineFactory:
    """Makes an inference twin's backbone run in onnxruntime (:mod:`fewshot_sdk.export.onnx_backbone`)."""

    def engine(body: nn.Module, input_shape: tuple[int, ...]) -> Engine:
        from fewshot_sdk.export.onnx_backbone import OnnxBackbone  # onnx and onnxruntime: only when asked for

        return OnnxBackbone(body, input_shape, threads)

    return engine


def create(
    method: str,
    *,
    backbone: str | dict[str, Any] | BackboneConfig | nn.Module | None = None,
    preprocess: dict[str, Any] | PreprocessConfig | None = None,
    **settings: Any,
) -> Learner:
    """An untrained learner, e.g. ``fs.create("protonet", backbone="resnet12", image_size=84, channels=3)``.

    ``image_size``, ``channels``, ``mean`` and ``std`` set the preprocessing; every
    other keyword is a setting of the method's config model (validated).
    """
    cls = method_class(method)
    preprocess_settings = {k: settings.pop(k) for k in PREPROCESS_KEYS if k in settings}
    try:
        module = backbone if isinstance(backbone, nn.Module) else None
        backbone_config = _backbone_config(cls, backbone)
        if not isinstance(preprocess, PreprocessConfig):
            base = default_preprocess(backbone_config).model_dump()
            preprocess = PreprocessConfig(**{**base, **(preprocess or {})})
        preprocess_config = PreprocessConfig(**{**preprocess.model_dump(), **preprocess_settings})
    except ValidationError as exc:
        raise InputError(f"invalid settings for {method}: {describe_validation_error(exc)}") from None
    try:
        config = cls.Config(**settings)
    except ValidationError as exc:
        raise InputError(describe_settings_error(exc, cls.Config, method)) from None
    return cls(config, backbone_config, preprocess_config, backbone_module=module).eval()


def _backbone_config(cls: type[Learner], backbone: object) -> BackboneConfig:
    defaults = dict(cls.default_backbone)
    if backbone is None:
        return BackboneConfig(**defaults)
    if isinstance(backbone, BackboneConfig):
        return backbone
    if isinstance(backbone, str):
        return BackboneConfig(**{**defaults, "name": backbone})
    if isinstance(backbone, dict):
        return BackboneConfig(**{**defaults, **backbone})
    if isinstance(backbone, nn.Module):
        return BackboneConfig(name="custom", description=type(backbone).__name__)
    raise InputError(
        f"backbone must be a name, a dict, a BackboneConfig or an nn.Module; got {type(backbone).__name__}"
    )


def available() -> dict[str, list[str]]:
    """The registered methods and the bundled pretrained models."""
    return {"methods": method_names(), "models": zoo_names()}


def _load_methods() -> None:
    """Importing the methods package registers every method (``@register_method`` in each file)."""
    importlib.import_module("fewshot_sdk.methods")


def method_names() -> list[str]:
    _load_methods()
    return sorted(registered_methods())


def method_class(name: str) -> type[Learner]:
    _load_methods()
    methods = registered_methods()
    if name not in methods:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(methods))}")
    return methods[name]


def build_learner(config: LearnerConfig, backbone_module: nn.Module | None = None) -> Learner:
    """An untrained learner of the architecture ``config`` describes."""
    cls = method_class(config.method)
    try:
        method_config = cls.Config.model_validate(config.method_config)
    except ValidationError as exc:
        raise InputError(f"invalid {config.method} settings: {describe_validation_error(exc)}") from None
    learner = cls(method_config, config.backbone, config.preprocess, backbone_module=backbone_module)
    learner.provenance = config.provenance.model_copy(deep=True)
    learner.domain = config.domain
    learner.storage_dtype = config.storage_dtype
    return learner


def load_learner(folder: str | Path, backbone_module: nn.Module | None = None) -> Learner:
    path = Path(folder)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint folder (expected {CONFIG_FILE} + {WEIGHTS_FILE})")
    config = read_json_model(path / CONFIG_FILE, LearnerConfig)
    learner = build_learner(config, backbone_module)
    load_state_into(learner, read_weights(path / WEIGHTS_FILE), path / WEIGHTS_FILE)  # shapes say the most
    check_weights_header(path / WEIGHTS_FILE, config, path / CONFIG_FILE, LEARNER_FORMAT)  # then what shapes cannot
    return learner.eval()
