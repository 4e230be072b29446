"""A saved task folder's own ONNX file, ``task.onnx``, bound to the task files it was exported from.

``task.save(folder, onnx=True)`` writes it beside ``task.json`` and ``task.safetensors``, and
``fs.load_task(folder, runtime="onnxruntime")`` answers with it. The file records, as its
``fewshot.task_digest``, the SHA-256 of the two task files it was exported from, and is run
only while they are still the ones beside it: a task saved again over an older export
(``overwrite=True`` without ``onnx=True``), or a ``task.onnx`` copied from another folder,
is refused with one line instead of answering for a task that is no longer there. (To run
such a file anyway, load the ``.onnx`` path itself.)

Loading writes to the folder only when asked: ``load_task(folder, runtime="onnxruntime",
export=True)`` exports ``task.onnx`` when the folder has none. A file that is there is never
replaced by loading, whether or not it belongs; ``task.save(..., onnx=True, overwrite=True)``
replaces it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from fewshot_sdk.adapted import TASK_FILE, TASK_WEIGHTS, TaskConfig
from fewshot_sdk.checkpoint import read_json_model
from fewshot_sdk.errors import CheckpointError
from fewshot_sdk.export.onnx import VerifiedGraph, verified_graph, write_graph
from fewshot_sdk.export.onnx_task import OnnxTask, open_onnx_file

if TYPE_CHECKING:
    from fewshot_sdk.adapted import AdaptedModel

TASK_ONNX = "task.onnx"
_BLOCK = 1 << 20


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


def write_task_onnx(graph: VerifiedGraph, task: AdaptedModel, folder: Path) -> Path:
    """Write ``graph`` as ``folder/task.onnx``, bound to the task files now in ``folder``."""
    out = folder / TASK_ONNX
    try:
        return write_graph(graph, task, out, task_digest=task_digest(folder))
    except OSError as exc:
        raise CheckpointError(f"cannot write {out}: {exc.strerror or exc}") from None


def open_task_folder(folder: Path, export: bool = False, threads: int = 0) -> OnnxTask:
    """The folder's ``task.onnx`` as a task, once it is known to belong to the folder's task files.

    ``export``: when the folder has no ``task.onnx``, export the saved task there first.
    """
    read_json_model(folder / TASK_FILE, TaskConfig)  # a saved task folder at all: one line if not
    out = folder / TASK_ONNX
    if not out.exists():
        if not export:
            raise CheckpointError(
                f"{folder} has no {TASK_ONNX} for runtime='onnxruntime': save the task with "
                "task.save(folder, onnx=True), or pass export=True to write it into the folder now"
            )
        from fewshot_sdk.zoo import load_task

        task = load_task(folder)
        write_task_onnx(verified_graph(task), task, folder)
    onnx_task = open_onnx_file(out, threads)
    if onnx_task.classifier.metadata.task_digest != task_digest(folder):
        raise CheckpointError(
            f"{out} was not exported from the task files beside it (the task was saved again after the export, "
            f"or the file comes from another folder); write it again with task.save(folder, onnx=True, "
            "overwrite=True), or delete it and load with export=True"
        )
    return onnx_task
