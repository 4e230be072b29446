"""One registry: method name -> Learner class (which carries its config model); zoo name -> checkpoint.

A leaf: it imports nothing of the package. Methods register themselves with
:func:`register_method` when ``fewshot_sdk.methods`` is imported (``fewshot_sdk.io.zoo``
does that before any lookup; :data:`SHIPPED_METHODS` names them without importing them);
bundled checkpoints are discovered from the folders under ``fewshot_sdk/models/zoo/``,
so shipping a model is adding a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

ZOO_DIR = Path(__file__).parent / "models" / "zoo"

#: Name (and alias) -> Learner class; typed loosely, since the registry sits below the methods.
_METHODS: dict[str, Any] = {}
#: Every name (and alias) the package's own methods register, known without importing them (torch), so that
#: ``fewshot models`` answers in a fraction of a second; a test checks it against the registered classes.
SHIPPED_METHODS = frozenset(
    {
        *("protonet", "matching", "matching-fce", "siamese", "relation"),  # metric
        *("mann", "santoro", "metanet", "meta-networks", "lstm-meta", "meta-lstm", "lstm-meta-learner"),  # memory
        *("maml", "fomaml", "first-order-maml", "reptile"),  # gradient
    }
)
LearnerT = TypeVar("LearnerT", bound=type)


def register_method(cls: LearnerT) -> LearnerT:
    """Class decorator: make a Learner available under its ``method`` name."""
    for name in (cls.method, *cls.aliases):
        if name in _METHODS and _METHODS[name] is not cls:
            raise RuntimeError(f"method name {name!r} registered twice")
        _METHODS[name] = cls
    return cls


def registered_methods() -> dict[str, Any]:
    """Name (and alias) -> Learner class, as registered so far; ``fewshot_sdk.io.zoo.method_class`` loads them all."""
    return dict(_METHODS)


def zoo_names() -> list[str]:
    if not ZOO_DIR.is_dir():
        return []
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file())


def zoo_path(name: str) -> Path | None:
    path = ZOO_DIR / name
    return path if (path / "config.json").is_file() else None
