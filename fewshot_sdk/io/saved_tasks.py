"""A saved task folder's own ONNX file, ``task.onnx``, bound to the task files it was exported from.

``task.save(folder, onnx=True)`` writes it beside ``task.json`` and ``task.safetensors``, and
``fs.load_task(folder, runtime="onnxruntime")`` answers with it. Its ``fewshot.task_digest`` is the
SHA-256 of those two files, and it runs only while they are still the ones beside it: after the task
is saved again without ``onnx=True``, or when copied from another folder, it is refused in one line
instead of answering for a task that is no longer there (loading the ``.onnx`` path itself runs it).

Loading writes to the folder only with ``export=True``, and only a missing ``task.onnx``; an existing
one, whether or not it belongs, is replaced only by ``task.save(..., onnx=True, overwrite=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from fewshot_sdk.checkpoint import (
    TASK_FORMAT,
    check_finite,
    check_weights_header,
    load_state_into,
    read_json_model,
    read_weights,
)
from fewshot_sdk.errors import CheckpointError, InputError
from fewshot_sdk.io.onnx_task import OnnxTask, open_onnx_file
from fewshot_sdk.io.zoo import build_learner, check_runtime
from fewshot_sdk.task.adapted import AdaptedModel, check_class_count
from fewshot_sdk.task.files import TASK_FILE, TASK_ONNX, TASK_WEIGHTS, TaskConfig, task_digest


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
        load_task(folder).write_onnx_into(folder)
    onnx_task = open_onnx_file(out, threads)
    if onnx_task.classifier.metadata.task_digest != task_digest(folder):
        raise CheckpointError(
            f"{out} was not exported from the task files beside it (the task was saved again after the export, "
            f"or the file comes from another folder); write it again with task.save(folder, onnx=True, "
            "overwrite=True), or delete it and load with export=True"
        )
    return onnx_task


#: No adapted state comes near this; beyond it squared distances overflow float32 into NaN answers.
MAX_STATE = 1e15


def load_task(
    folder: str | os.PathLike,
    backbone_module: nn.Module | None = None,
    *,
    runtime: str | None = None,
    export: bool = False,
    threads: int = 0,
) -> AdaptedModel | OnnxTask:
    """Reload a task written by ``AdaptedModel.save``, or open an exported ``.onnx`` file as a task.

    ``runtime``: ``"torch"`` (a folder's default) or ``"onnxruntime"`` (a ``.onnx`` file's; for a
    folder, its ``task.onnx``). Both answer ``predict(query, batch_size=, reject=)`` with a
    ``Prediction``; only the torch task grows, saves and exports. ``export=True`` (onnxruntime, a
    folder): write a missing ``task.onnx``, the one case in which loading writes. ``threads``:
    onnxruntime's intra-op threads (0: its default).
    """
    path = Path(folder)
    runtime = _task_runtime(path, runtime)
    if runtime == "onnxruntime":
        if not path.exists():
            raise CheckpointError(f"saved task not found: {path} does not exist")
        return open_task_folder(path, export, threads) if path.is_dir() else open_onnx_file(path, threads)
    if export:
        raise InputError("export=True writes a folder's task.onnx for runtime='onnxruntime'; the torch task needs none")
    if not path.is_dir():
        raise CheckpointError(f"saved task not found: {path} is not a folder")
    config: TaskConfig = read_json_model(path / TASK_FILE, TaskConfig)
    tensors = read_weights(path / TASK_WEIGHTS)
    try:
        learner = build_learner(config.learner, backbone_module)
    except InputError as exc:  # the file names a method or settings this SDK cannot build
        raise CheckpointError(f"{path / TASK_FILE}: {exc}") from None
    if config.task != learner.kind.name:
        raise CheckpointError(
            f"{path / TASK_FILE} calls this a {config.task} task but its {learner.method} learner's tasks are "
            f"{learner.kind.name}: the files do not belong together"
        )
    learner_tensors = {k[len("learner.") :]: v for k, v in tensors.items() if k.startswith("learner.")}
    load_state_into(learner, learner_tensors, path / TASK_WEIGHTS)
    check_weights_header(path / TASK_WEIGHTS, config.learner, path / TASK_FILE, TASK_FORMAT)
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    if sorted(state) != sorted(config.state_names):
        raise CheckpointError(
            f"{path / TASK_WEIGHTS} holds task state {sorted(state)} but {TASK_FILE} lists {config.state_names}"
        )
    ordered = {name: state[name] for name in config.state_names}
    check_finite(ordered, path / TASK_WEIGHTS)
    huge = [
        name for name, t in ordered.items() if t.is_floating_point() and t.numel() and float(t.abs().max()) > MAX_STATE
    ]
    if huge:
        raise CheckpointError(f"{path / TASK_WEIGHTS}: task state {huge[0]} holds values beyond {MAX_STATE:g}; corrupt")
    task = AdaptedModel(
        learner.eval().freeze(),
        ordered,
        config.class_names,
        task=config.task,
        novelty_threshold=config.novelty_threshold,
    )
    if task.kind.classifies:
        check_class_count(task, path)
    return task


def _task_runtime(path: Path, runtime: str | None) -> str:
    """The runtime asked for, or the one the path implies: onnxruntime for a ``.onnx`` file, else torch."""
    is_onnx_file = path.suffix.lower() == ".onnx" and not path.is_dir()
    if runtime is None:
        return "onnxruntime" if is_onnx_file else "torch"
    if check_runtime(runtime) == "torch" and is_onnx_file:
        raise CheckpointError(f"{path} is an exported ONNX file: it runs with runtime='onnxruntime' (its default)")
    return runtime
