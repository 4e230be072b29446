"""A saved task folder: ``task.json`` + ``task.safetensors`` (nothing pickled), and optionally ``task.onnx``.

``task.json``: the learner's config, class names, state tensor names and the ``reject="auto"``
threshold; ``task.safetensors``: the learner's weights (``learner.*``) and the task state
(``state.*``). ``task.onnx`` records the SHA-256 of the two files it was exported from
(``fewshot.task_digest``), so a reader refuses one that no longer belongs to them
(:mod:`fewshot_sdk.io.saved_tasks`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from fewshot_sdk.api import TaskKind
from fewshot_sdk.checkpoint import LearnerConfig
from fewshot_sdk.class_names import class_names_problem
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
    novelty_threshold: float | None = Field(None, allow_inf_nan=False)

    @field_validator("class_names")
    @classmethod
    def _usable_names(cls, names: list[str]) -> list[str]:
        problem = class_names_problem(names)
        if problem is not None:
            raise ValueError(problem)
        return names


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
