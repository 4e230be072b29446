"""A saved task folder: ``task.json`` + ``task.safetensors``, and optionally its own ``task.onnx``.

``task.json`` holds the learner's config, the class names, the names of the state tensors and the
``reject="auto"`` threshold; ``task.safetensors`` the learner's weights (``learner.*``) and the task
state (``state.*``). Nothing is pickled. ``task.onnx``, written by ``task.save(folder, onnx=True)``,
records as its ``fewshot.task_digest`` the SHA-256 of the two task files it was exported from, so a
reader can refuse a file that no longer belongs to the task beside it
(:mod:`fewshot_sdk.io.saved_tasks`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from fewshot_sdk.api import TaskKind
from fewshot_sdk.checkpoint import LearnerConfig
from fewshot_sdk.config import StrictModel
from fewshot_sdk.errors import CheckpointError
from fewshot_sdk.version import __version__

TASK_FILE = "task.json"
TASK_WEIGHTS = "task.safetensors"
TASK_ONNX = "task.onnx"
_BLOCK = 1 << 20


class TaskConfig(StrictModel):
    """``task.json``: the learner's config, the class names and the names of the state tensors."""

    format: Literal["fewshot-sdk/task"] = "fewshot-sdk/task"
    format_version: Literal[1] = 1
    sdk_version: str = __version__
    learner: LearnerConfig
    class_names: list[str]
    state_names: list[str]
    task: TaskKind = "classification"
    #: The ``reject="auto"`` threshold calibrated on the support set; None: not calibrated.
    novelty_threshold: float | None = None


def task_digest(folder: Path) -> str:
    """SHA-256 of ``task.json`` and ``task.safetensors``, each preceded by its name and size."""
    digest = hashlib.sha256()
    for name in (TASK_FILE, TASK_WEIGHTS):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: is {folder} a saved task folder?")
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()
