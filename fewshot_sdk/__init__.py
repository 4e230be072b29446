"""fewshot-sdk: adapt meta-learned models to a handful of labelled examples, with no training run.

    import fewshot_sdk as fs
    learner = fs.load("protonet-omniglot")
    task = learner.adapt(fs.SupportSet.from_folder("shapes/"))
    pred = task.predict(["a.png", "b.png"])

The public names load on first use (PEP 562), so that an application that only runs an
exported model (``fewshot_sdk.export.runtime``: onnxruntime + numpy + pillow) never
imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fewshot_sdk.version import __version__

_PUBLIC = {
    "AdaptedModel": "fewshot_sdk.task.adapted",
    "load_task": "fewshot_sdk.io.saved_tasks",
    "Prediction": "fewshot_sdk.api",
    "SupportSet": "fewshot_sdk.api",
    "AdaptationError": "fewshot_sdk.errors",
    "CheckpointError": "fewshot_sdk.errors",
    "DomainWarning": "fewshot_sdk.task.domain",
    "FewShotError": "fewshot_sdk.errors",
    "InputError": "fewshot_sdk.errors",
    "Learner": "fewshot_sdk.methods.base",
    "available": "fewshot_sdk.io.zoo",
    "create": "fewshot_sdk.io.zoo",
    "load": "fewshot_sdk.io.zoo",
    "keep_freed_memory": "fewshot_sdk.allocator",
}

__all__ = [
    "AdaptationError",
    "AdaptedModel",
    "CheckpointError",
    "DomainWarning",
    "FewShotError",
    "InputError",
    "Learner",
    "Prediction",
    "SupportSet",
    "__version__",
    "available",
    "create",
    "keep_freed_memory",
    "load",
    "load_task",
]

if TYPE_CHECKING:
    from fewshot_sdk.allocator import keep_freed_memory
    from fewshot_sdk.api import Prediction, SupportSet
    from fewshot_sdk.errors import AdaptationError, CheckpointError, FewShotError, InputError
    from fewshot_sdk.io.saved_tasks import load_task
    from fewshot_sdk.io.zoo import available, create, load
    from fewshot_sdk.methods.base import Learner
    from fewshot_sdk.task.adapted import AdaptedModel
    from fewshot_sdk.task.domain import DomainWarning


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fewshot_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
