"""An exported task answering through the torch task's API: ``predict(query, batch_size=, reject=)`` -> ``Prediction``.

``fs.load_task("x.onnx")`` (or a saved task folder with ``runtime="onnxruntime"``) returns an
:class:`OnnxTask`, so a deployed application changes how it loads a task, not how it asks it. The
file's session, preprocessing, input checks and threshold are
:class:`~fewshot_sdk.export.runtime.OnnxClassifier`'s; this module reads queries as the torch task
does (:func:`fewshot_sdk.api.query_form`) and wraps the outputs, uncopied, in a
:class:`~fewshot_sdk.api.Prediction`. It imports torch for that; ``OnnxClassifier`` stays torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from fewshot_sdk.api import Prediction, QueryLike, query_form
from fewshot_sdk.errors import CheckpointError, InputError
from fewshot_sdk.export.runtime import OnnxClassifier, chunks
from fewshot_sdk.imageio import ImageLike
from fewshot_sdk.predict_options import TASK_THRESHOLD, check_batch_size


class OnnxTask:
    """A task run by onnxruntime: the torch task's ``predict`` and description, from an exported file.

    ``Prediction.logits`` are the graph's: for ProtoNet they differ from the torch task's by a
    constant per query (the exported head drops ``-|f|^2``), so probabilities, classes and
    novelty agree while raw logits need not.
    """

    runtime = "onnxruntime"
    task = "classification"

    def __init__(self, classifier: OnnxClassifier) -> None:
        self.classifier = classifier
        self.class_names = tuple(classifier.metadata.class_names)

    @property
    def path(self) -> Path:
        return self.classifier.path

    @property
    def method(self) -> str:
        return self.classifier.metadata.method

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def novelty_threshold(self) -> float:
        """The ``reject="auto"`` threshold recorded in the file when it was exported."""
        return self.classifier.recorded_threshold()

    def preprocess(self, images: Sequence[ImageLike] | ImageLike) -> torch.Tensor:
        """The exact [B, C, H, W] batch the graph takes for these images (equal to the torch task's)."""
        return torch.from_numpy(self.classifier.preprocess(images))

    def predict(self, query: QueryLike, batch_size: int = 256, reject: float | str | None = None) -> Prediction:
        """Classify queries as the torch task would: indices, names, probabilities, novelty, rejection.

        ``query``: a path, a list of paths / PIL images / arrays, or a model-ready [B, C, H, W]
        tensor; ``reject``: None, ``"auto"`` (the recorded threshold) or a number.
        """
        threshold = self.classifier.threshold(reject, where=TASK_THRESHOLD)
        outputs = self.classifier.outputs_in_chunks(self._batches(query, check_batch_size(batch_size)))
        return Prediction(
            indices=torch.from_numpy(outputs[1].argmax(1)),
            probs=torch.from_numpy(outputs[1]),
            classes=self.class_names,
            logits=torch.from_numpy(outputs[0]),
            novelty=torch.from_numpy(outputs[2]) if len(outputs) > 2 else None,
            threshold=threshold,
        )

    def _batches(self, query: QueryLike, batch_size: int) -> Iterable[np.ndarray]:
        """Model-ready numpy batches of at most ``batch_size`` queries; images are decoded a chunk at a time."""
        form = query_form(query)
        if not isinstance(form, torch.Tensor):
            return (self.classifier.preprocess(chunk) for chunk in chunks(form, batch_size))
        batch = form.numpy(force=True)  # detached, on the CPU; no copy for a CPU tensor. The classifier checks it
        batch = batch[None] if batch.ndim == 3 else batch
        return [batch] if batch.ndim != 4 or len(batch) <= batch_size else chunks(batch, batch_size)

    def __repr__(self) -> str:
        return f"OnnxTask({str(self.path)!r}, method={self.method!r}, classes={list(self.class_names)})"


def open_onnx_file(path: str | os.PathLike, threads: int = 0) -> OnnxTask:
    """An exported ``.onnx`` file as a task; anything wrong with the file is one :class:`CheckpointError` line."""
    try:
        return OnnxTask(OnnxClassifier(path, threads=threads))
    except InputError as exc:  # not found, not an ONNX graph, not ours: the file, not the user's query, is wrong
        raise CheckpointError(str(exc)) from None
