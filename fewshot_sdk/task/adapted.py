"""An adapted model: what ``learner.adapt(support)`` returns.

It holds the learner (a reference, never mutated), the task state and the task network
(:class:`~fewshot_sdk.task.network.TaskNetwork`) ``adapt`` built from it once: ``predict`` runs
that network, ``export_onnx`` serialises it, ``save`` writes learner and state to one folder.
A task adapted in this process also keeps its model-ready support tensors, in memory only, so
that ``reject="auto"`` can calibrate its threshold on first use; ``save`` and ``export_onnx``
record the threshold. The task knows no method: it reaches its learner through
:class:`TaskLearner` (a method builds tasks; a task never needs a method's code).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from PIL import Image

from fewshot_sdk.api import Prediction, QueryLike, SupportSet, TaskKind, query_form
from fewshot_sdk.checkpoint import (
    TASK_FORMAT,
    learner_config,
    non_finite,
    stored_tensors,
    weights_header,
    write_json,
    write_weights,
    writing_folder,
)
from fewshot_sdk.config import PreprocessConfig, StrictModel
from fewshot_sdk.data.images import Preprocessor
from fewshot_sdk.data.task_kinds import task_kind
from fewshot_sdk.errors import CheckpointError, InputError
from fewshot_sdk.export.metadata import OnnxMetadata
from fewshot_sdk.predict_options import check_batch_size, check_reject, resolve_threshold
from fewshot_sdk.task.domain import DomainWatch
from fewshot_sdk.task.files import TASK_FILE, TASK_ONNX, TASK_WEIGHTS, TaskConfig, task_digest
from fewshot_sdk.task.layout import Layout
from fewshot_sdk.task.layout import merge as merge_states
from fewshot_sdk.task.layout import select as select_classes
from fewshot_sdk.task.network import TaskNetwork
from fewshot_sdk.version import __version__

if TYPE_CHECKING:
    from fewshot_sdk.config import StrictModel as Options
    from fewshot_sdk.export.onnx import VerifiedGraph

TaskState = dict[str, torch.Tensor]

#: The smallest query batch ``predict(..., transductive=True)`` refines the task with.
MIN_TRANSDUCTIVE_BATCH = 2

__all__ = ["TASK_FILE", "TASK_WEIGHTS", "AdaptedModel", "TaskConfig", "TaskLearner", "TaskState", "TaskSupport"]


class TaskLearner(Protocol):
    """What a task asks of the learner it was adapted from (``methods.base.Learner`` answers all of it)."""

    method: str
    domain: str
    preprocessor: Preprocessor
    preprocess_config: PreprocessConfig
    domain_watch: DomainWatch

    def preprocess(self, images: object) -> torch.Tensor: ...

    def task_network(self, state: TaskState, transductive: bool = False) -> TaskNetwork: ...

    def task_layout(self) -> Layout | None: ...

    def adapt_classes(self, x: torch.Tensor, y: torch.Tensor, n_way: int) -> TaskState: ...

    def novelty_threshold(self, x: torch.Tensor, y: torch.Tensor, n_way: int, options: StrictModel) -> float: ...


@dataclass(frozen=True)
class TaskSupport:
    """The model-ready support a task was adapted on, and the options it was adapted with."""

    x: torch.Tensor
    y: torch.Tensor
    options: Options

    def merged(self, other: TaskSupport, classes_before: int) -> TaskSupport:
        """This support followed by ``other``'s, whose labels are numbered after this one's classes."""
        return TaskSupport(torch.cat([self.x, other.x]), torch.cat([self.y, other.y + classes_before]), self.options)

    def selected(self, keep: list[int]) -> TaskSupport:
        """The examples of the classes ``keep``, relabelled in that order."""
        relabel = torch.full((int(self.y.max()) + 1,), -1, dtype=torch.long)
        relabel[torch.tensor(keep)] = torch.arange(len(keep))
        labels = relabel[self.y]
        kept = labels >= 0
        return TaskSupport(self.x[kept], labels[kept], self.options)


class AdaptedModel:
    """A learner adapted to one support set."""

    def __init__(
        self,
        learner: TaskLearner,
        state: TaskState,
        class_names: Sequence[str],
        task: TaskKind = "classification",
        support: TaskSupport | None = None,
        novelty_threshold: float | None = None,
        network: TaskNetwork | None = None,
    ) -> None:
        """``network``: the task network of ``state``, when the caller built it already (``adapt`` does)."""
        self.learner = learner
        self.state = state
        self.network = network if network is not None else learner.task_network(state)
        self.class_names = tuple(class_names)
        self.task = task
        self.kind = task_kind(task)
        self.support = support
        self._novelty_threshold = novelty_threshold
        self._transductive_network: TaskNetwork | None = None

    @property
    def method(self) -> str:
        return self.learner.method

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        """Where queries are scored: the task network's device."""
        return self.network.device

    def preprocess(self, images: Sequence | str | os.PathLike | Image.Image | np.ndarray) -> torch.Tensor:
        """The exact [B, C, H, W] tensor the model consumes (and that an exported ONNX file takes)."""
        return self.learner.preprocess(images)

    def as_batch(self, query: QueryLike) -> torch.Tensor:
        """Any supported query form -> a validated model-ready batch."""
        preprocessor = self.learner.preprocessor
        inputs = self.kind.query_tensor(query)  # a regression task's inputs; images are the preprocessor's
        if inputs is not None:
            return inputs
        form = query_form(query)
        if isinstance(form, torch.Tensor):
            return preprocessor.check_batch(form, "query")
        return preprocessor(form)

    def logits(self, query: QueryLike, batch_size: int = 256) -> torch.Tensor:
        return self.scores(query, batch_size)[0]

    def scores(
        self, query: QueryLike, batch_size: int = 256, transductive: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits [B, N], probabilities [B, N] and novelty [B] of the queries, in chunks of ``batch_size``.

        The queries are validated once for the whole batch and run through the task network
        (``transductive``: the one refined by the whole batch, unchunked; see :meth:`predict`).
        """
        check_batch_size(batch_size)
        if not isinstance(transductive, bool):
            raise InputError(f"transductive must be True or False, got {transductive!r}")
        refined = self.transductive_network if transductive else None  # a method without one refuses here
        batch = self.as_batch(query)
        self.learner.domain_watch.warn(stacklevel=3)  # photos given to a handwriting model: say so, once
        if refined is not None and len(batch) >= max(MIN_TRANSDUCTIVE_BATCH, self.num_classes):
            return refined.run(batch, len(batch))
        return self.network.run(batch, batch_size)

    @property
    def transductive_network(self) -> TaskNetwork:
        """The task network of ``predict(..., transductive=True)``, built on first use (or refused by the method)."""
        if self._transductive_network is None:
            self._transductive_network = self.learner.task_network(self.state, transductive=True)
        return self._transductive_network

    def predict(
        self, query: QueryLike, batch_size: int = 256, reject: float | str | None = None, transductive: bool = False
    ) -> Prediction:
        """Classify queries: class indices, names, every class's probability, and each query's novelty.

        ``reject``: None (default) always names a support class; ``"auto"`` answers None for
        queries above :attr:`novelty_threshold`, calibrated on the support set; a number is a
        threshold of your own on ``Prediction.novelty``. For a regression task,
        ``Prediction.values`` holds the predicted outputs.

        ``transductive=True`` (ProtoNet) lets the query batch move the prototypes before they
        score it (soft k-means in features centred on the support,
        :mod:`fewshot_sdk.methods.transductive_prototypes`): better off the training domain with
        one or few shots, also when the batch holds the classes in unequal numbers, but each answer
        then depends on the rest of the batch. A batch smaller than the class count (or than 2)
        cannot stand for them and is answered inductively. Novelty, and so ``reject``, is the
        inductive one.
        """
        if not self.kind.classifies:
            check_reject(reject)
            if reject is not None or transductive:
                raise InputError(
                    "reject and transductive apply to classification tasks; a regression task predicts values"
                )
            empty = torch.empty(0)
            return Prediction(
                indices=empty.long(), probs=empty, classes=self.class_names, values=self.logits(query, batch_size)
            )
        threshold = resolve_threshold(reject, lambda: self.novelty_threshold)
        logits, probs, novelty = self.scores(query, batch_size, transductive)
        return Prediction(
            indices=probs.argmax(dim=1),
            probs=probs,
            classes=self.class_names,
            logits=logits,
            novelty=novelty,
            threshold=threshold,
        )

    @property
    def novelty_threshold(self) -> float:
        """The ``reject="auto"`` threshold: calibrated on the support set alone, on first use (module docstring)."""
        if self._novelty_threshold is None:
            if self.support is None:
                raise InputError(
                    f"this {self.method} task has no calibrated novelty threshold: it was loaded without one "
                    "(saved by an older SDK, or grown after loading); adapt it again on its support set, "
                    "or pass reject=<novelty threshold>"
                )
            if not self.kind.classifies:
                raise InputError("a regression task has no novelty threshold")
            support = self.support
            self._novelty_threshold = self.learner.novelty_threshold(
                support.x, support.y, self.num_classes, support.options
            )
        return self._novelty_threshold

    def novelty_threshold_or_none(self) -> float | None:
        """The threshold where one is known or can be calibrated (what ``save`` and ``export_onnx`` record)."""
        if self._novelty_threshold is None and (self.support is None or not self.kind.classifies):
            return None
        try:
            return self.novelty_threshold
        except InputError:  # too few classes to hold one out: nothing to record
            return None

    def add_classes(self, more: SupportSet | Mapping[str, Sequence[object]]) -> AdaptedModel:
        """This task with ``more``'s classes (one or several) after its own, its own not adapted again.

        ``more`` is a ``SupportSet`` or a ``{class name: [images]}`` mapping. Equals adapting on
        the union of the two support sets, for methods whose task state is per class
        (ProtoNet, Relation, Matching, Siamese); the others refuse. A fine-tuned task is adapted
        again, fine-tuning included, on its support set and ``more``'s (seconds, not
        milliseconds); one reloaded from a folder has no support set and refuses. Returns a new
        task; this one is unchanged.
        """
        layout, refit = self.class_change("add classes to")
        if not isinstance(more, SupportSet):
            more = SupportSet.from_mapping(more, min_classes=1)  # type: ignore[arg-type]
        clash = sorted(set(self.class_names) & set(more.class_names))
        if clash:
            raise InputError(f"the task already has classes {clash}: give new class names, or remove_classes first")
        x, y = more.to_tensors(self.learner.preprocessor)
        self.learner.domain_watch.warn(stacklevel=2)
        names = self.class_names + more.class_names
        if refit is not None:
            grown = refit.merged(TaskSupport(x, y, refit.options), self.num_classes)
            return self.learner.adapted_on(grown.x, grown.y, names, grown.options, self.task)
        assert layout is not None
        added = self.learner.adapt_classes(x, y, more.num_classes)
        merged = merge_states(layout, self.state, added)
        support = None
        if self.support is not None:
            support = self.support.merged(TaskSupport(x, y, self.support.options), self.num_classes)
        return AdaptedModel(self.learner, merged, names, self.task, support)

    def remove_classes(self, names: Sequence[str]) -> AdaptedModel:
        """This task without the classes ``names`` (a new task; this one is unchanged). A fine-tuned task is
        adapted again, fine-tuning included, on the rest of its support set."""
        layout, refit = self.class_change("remove classes from")
        removed = {names} if isinstance(names, str) else set(names)
        unknown = sorted(removed - set(self.class_names))
        if unknown:
            raise InputError(f"the task has no classes {unknown}; its classes are {list(self.class_names)}")
        keep = [i for i, name in enumerate(self.class_names) if name not in removed]
        if len(keep) < 2:
            raise InputError(f"removing {sorted(removed)} would leave {len(keep)} class; a task needs at least 2")
        kept_names = [self.class_names[i] for i in keep]
        if refit is not None:
            rest = refit.selected(keep)
            return self.learner.adapted_on(rest.x, rest.y, kept_names, rest.options, self.task)
        assert layout is not None
        return AdaptedModel(
            self.learner,
            select_classes(layout, self.state, keep),
            kept_names,
            self.task,
            None if self.support is None else self.support.selected(keep),
        )

    def class_change(self, action: str) -> tuple[Layout | None, TaskSupport | None]:
        """How this task's classes change: ``(its per-class layout, None)`` when its state is made of per-class
        pieces; ``(None, its kept support)`` when it was fine-tuned on its whole support set, which is then
        adapted again; otherwise one line saying what to do instead."""
        layout = self.learner.task_layout() if self.kind.classifies else None
        if layout is None:
            raise InputError(
                f"cannot {action} a {self.method} task: its adapted state depends on the whole support set; "
                "adapt again on the new support set (learner.adapt)"
            )
        whole = sorted(set(self.state) - set(layout))
        if not whole:
            return layout, None
        if self.support is not None:
            return None, self.support
        raise InputError(
            f"cannot {action} this {self.method} task: it was fine-tuned on its whole support set "
            f"({len(whole)} tuned tensors, e.g. {whole[0]}); adapt again, with finetune, on the new support set"
        )

    def save(self, folder: str | os.PathLike, overwrite: bool = False, onnx: bool = False) -> Path:
        """One folder with the learner, the task state and its novelty threshold (calibrated now if need be:
        the support images are not saved); reload with ``fs.load_task``. ``onnx=True`` also writes a verified
        ``task.onnx``, exported before any file is written, so a task that does not export leaves the folder be.
        """
        files = (TASK_FILE, TASK_WEIGHTS, TASK_ONNX) if onnx else (TASK_FILE, TASK_WEIGHTS)
        existed = Path(folder).exists()
        try:
            with writing_folder(folder, overwrite, files) as path:
                graph = self.verified_graph() if onnx else None  # before any file is written
                tensors = {f"learner.{k}": v for k, v in stored_tensors(self.learner).items()}
                tensors.update({f"state.{k}": v for k, v in self.state.items()})
                config = TaskConfig(
                    learner=learner_config(self.learner),
                    class_names=list(self.class_names),
                    state_names=list(self.state),
                    task=self.task,
                    novelty_threshold=self.novelty_threshold_or_none(),
                )
                write_weights(path / TASK_WEIGHTS, tensors, weights_header(config.learner, TASK_FORMAT))
                write_json(path / TASK_FILE, config)
                if graph is not None:
                    self.write_graph(graph, path / TASK_ONNX, task_digest(path))
        except BaseException:
            if not existed:
                with contextlib.suppress(OSError):
                    Path(folder).rmdir()  # the folder this call made, if still empty
            raise
        return path

    def export_onnx(
        self,
        path: str | os.PathLike,
        opset: int | None = None,
        overwrite: bool = False,
        phases: dict[str, float] | None = None,
        quantize: str | None = None,
    ) -> Path:
        """The task network ``predict`` runs as one ``.onnx`` file (outputs ``logits``, ``probs``, ``novelty``),
        checked against it before it is written; a failed export leaves no file. ``opset``: the target
        (default: the exporter's); ``phases``, when given, receives the seconds each step took.
        ``quantize="int8"``: statically quantized, calibrated on the task's support images and written only
        if it keeps their answers (:mod:`fewshot_sdk.export.quantize`); needs a task adapted in this process.
        """
        from fewshot_sdk.export.onnx import check_destination  # onnx: imported when a task is exported

        if quantize not in (None, "int8"):
            raise InputError(f"quantize takes None (float32) or 'int8', got {quantize!r}")
        if quantize is not None and self.support is None:
            raise InputError(
                "int8 export calibrates on the task's support images, which a reloaded or grown-after-loading task "
                "does not keep: adapt the task again in this process (learner.adapt), or export in float32"
            )
        out = check_destination(path, overwrite)
        graph = self.verified_graph(opset, phases)
        if quantize is not None:
            from fewshot_sdk.export.quantize import int8_graph

            graph = int8_graph(graph, self.support.x.detach().cpu().float().numpy())
        return self.write_graph(graph, out, phases=phases, quantized=quantize)

    def write_onnx_into(self, folder: Path) -> Path:
        """Write ``folder/task.onnx`` for the saved task files now in ``folder`` (bound to them by their digest)."""
        return self.write_graph(self.verified_graph(), folder / TASK_ONNX, task_digest(folder))

    def verified_graph(self, opset: int | None = None, phases: dict[str, float] | None = None) -> VerifiedGraph:
        """The task network as an ONNX graph that matches it (:func:`fewshot_sdk.export.onnx.verified_graph`)."""
        if not self.kind.classifies:
            raise InputError(f"only classification tasks export to ONNX; this {self.method} task is a {self.task} task")
        broken = non_finite(self.state)
        if broken:
            raise InputError(f"the {self.method} task holds NaN or infinite values in {broken[:3]}: re-adapt it")
        self.novelty_threshold_or_none()  # before the export work, so a calibration error comes first
        from fewshot_sdk.export.onnx import verified_graph

        shape = self.learner.preprocess_config.input_shape
        return verified_graph(self.network, shape, f"{self.method} task", opset, phases)

    def write_graph(
        self,
        graph: VerifiedGraph,
        out: Path,
        digest: str | None = None,
        phases: dict[str, float] | None = None,
        quantized: str | None = None,
    ) -> Path:
        """Write ``graph`` with this task's metadata; ``digest``: the saved task files it belongs to."""
        from fewshot_sdk.export.onnx import write_graph

        metadata = OnnxMetadata.describing(
            self.method,
            self.class_names,
            self.learner.preprocess_config,
            __version__,
            novelty_threshold=self.novelty_threshold_or_none(),
            task_digest=digest,
            quantized=quantized,
        )
        try:
            return write_graph(graph, metadata, out, phases)
        except OSError as exc:
            raise CheckpointError(f"cannot write {out}: {exc.strerror or exc}") from None

    def __repr__(self) -> str:
        return f"AdaptedModel(method={self.method!r}, classes={list(self.class_names)})"


def check_class_count(task: AdaptedModel, path: Path) -> None:
    """A probe query must score exactly one logit per class name (catches another task's state)."""
    probe = torch.zeros(1, *task.learner.preprocess_config.input_shape)
    try:
        classes = task.network.run(probe, 1)[0].shape[-1]
    except (RuntimeError, IndexError, ValueError) as exc:
        raise CheckpointError(f"{path / TASK_WEIGHTS}: the task state does not fit the model ({exc})") from None
    if classes != task.num_classes:
        raise CheckpointError(
            f"{path / TASK_FILE} names {task.num_classes} classes but the task state in {TASK_WEIGHTS} scores "
            f"{classes}: the files do not belong together"
        )
