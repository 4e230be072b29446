"""One registry: method name -> Learner class (which carries its config model); zoo name -> checkpoint.

Methods register themselves with :func:`register_method` when
``fewshot_sdk.methods`` is imported; bundled checkpoints are discovered from the
folders under ``fewshot_sdk/models/zoo/``, so shipping a model is adding a folder.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fewshot_sdk.errors import InputError

if TYPE_CHECKING:
    from fewshot_sdk.methods.base import Learner

ZOO_DIR = Path(__file__).parent / "models" / "zoo"

_METHODS: dict[str, type[Learner]] = {}
LearnerT = TypeVar("LearnerT", bound="type[Learner]")


def register_method(cls: LearnerT) -> LearnerT:
    """Class decorator: make a Learner available under its ``method`` name."""
    for name in (cls.method, *cls.aliases):
        if name in _METHODS and _METHODS[name] is not cls:
            raise RuntimeError(f"method name {name!r} registered twice")
        _METHODS[name] = cls
    return cls


def _load_methods() -> None:
    importlib.import_module("fewshot_sdk.methods")


def method_names() -> list[str]:
    _load_methods()
    return sorted(_METHODS)


def method_class(name: str) -> type[Learner]:
    _load_methods()
    try:
        return _METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}") from None


def zoo_names() -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def zoo_path(name: str) -> Path | None:
    path = ZOO_DIR / name
    return path if (path / "config.json").is_file() else None
