"""The base every method stands on: a Learner that adapts to a support set.

A method writes three things, in the words of its paper:

- ``fit_task(support_x, support_y, n_way)``: the task state (prototypes, stored
  embeddings, memory, fast weights, adapted parameters) as a dict of tensors,
  differentiable so that meta-training can backpropagate through it;
- ``score(state, query_x)``: the logits of every query for every class;
- optionally ``episode_loss``, ``meta_gradients`` or ``outer_update`` where its paper
  trains differently from "adapt on the support, cross-entropy on the query, one
  optimiser step".

Everything else (preprocessing, validation, batching, devices, Prediction,
saving, export) is shared here and in :mod:`fewshot_sdk.task`. Inference runs on the learner's
*inference twin* (:meth:`Learner.freeze`), which ``fs.load`` builds once and ``adapt`` builds per
task for a learner that has none (one being trained).
"""

from __future__ import annotations

import copy
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from fewshot_sdk.api import SupportSet
from fewshot_sdk.checkpoint import save_learner
from fewshot_sdk.config import (
    BackboneConfig,
    PreprocessConfig,
    Provenance,
    StrictModel,
    describe_validation_error,
)
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.data.images import ImageLike, Preprocessor
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.data.task_kinds import CLASSIFICATION, TaskKind, task_kind
from fewshot_sdk.errors import InputError
from fewshot_sdk.finite import all_finite
from fewshot_sdk.methods.step_metrics import StepMetrics
from fewshot_sdk.models.backbones import build_backbone, default_domain, default_preprocess
from fewshot_sdk.models.frozen import EngineFactory, FrozenBackbone
from fewshot_sdk.task.adapted import AdaptedModel, TaskState, TaskSupport
from fewshot_sdk.task.domain import DomainWatch
from fewshot_sdk.task.layout import Layout
from fewshot_sdk.task.network import TaskNetwork
from fewshot_sdk.task.open_set import choose_threshold, held_out_scores, max_logit_novelty

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Learner", "NoOptions", "StateBuffers", "TaskState", "check_support", "class_means"]


class NoOptions(StrictModel):
    """The options of a method that adapts without settings (the metric and memory methods)."""


class Learner(nn.Module, metaclass=ABCMeta):
    """Meta-learned weights plus the recipe to adapt them to a new task.

    ``adapt`` never mutates the learner: one learner serves many tasks, from many
    threads. Learners are returned in eval mode; the training loop switches modes.
    """

    method: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[StrictModel]]
    #: What ``adapt(support, **options)`` accepts, validated once here for every method.
    Options: ClassVar[type[StrictModel]] = NoOptions
    #: Backbone settings this method needs unless the user says otherwise.
    default_backbone: ClassVar[dict[str, object]] = {}
    #: False when the paper's outer update is not an optimiser step (Reptile's interpolation):
    #: the training loop then builds no optimiser or learning-rate schedule for it.
    uses_outer_optimizer: ClassVar[bool] = True
    #: True when the backbone embeds each image the same way whatever the task (no per-task
    #: weights, no transductive statistics), so evaluation may embed every image once and reuse it.
    task_independent_embedding: ClassVar[bool] = False
    #: False where adaptation runs the learner's own network with weights swapped in (the MAML family):
    #: its task network is built from the adapted weights instead, so an inference twin has nothing to do.
    has_inference_twin: ClassVar[bool] = True

    def __init__(
        self,
        config: StrictModel | None = None,
        backbone: BackboneConfig | None = None,
        preprocess: PreprocessConfig | None = None,
        backbone_module: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.backbone_config = backbone if backbone is not None else BackboneConfig(**self.default_backbone)
        self.preprocess_config = preprocess if preprocess is not None else default_preprocess(self.backbone_config)
        #: Photos decoded for a handwriting model: noted by the preprocessor, said once by adapt / predict.
        self.domain_watch = DomainWatch(self)
        self.preprocessor = Preprocessor(self.preprocess_config, watch=self.domain_watch)
        self.backbone = build_backbone(self.backbone_config, self.preprocess_config, backbone_module)
        self.provenance = Provenance()
        #: What the weights were trained on ("photos", "handwritten-characters", ...); saved in config.json.
        self.domain = default_domain(self.backbone_config)
        #: "float16" stores the weights at half size on disk (loading casts them back to float32).
        self.storage_dtype = "float32"
        self.build()

    def build(self) -> None:
        """Create the method's own modules; runs once, after ``config`` and ``backbone`` exist.

        A hook rather than an ``__init__`` override, so no method repeats the constructor's
        signature (checkpoint loading builds every learner through that one signature).
        """

    # ------------------------------------------------------- method hooks
    @abstractmethod
    def fit_task(
        self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> TaskState:
        """The task state adapted to the support set (differentiable w.r.t. the learner).

        ``options`` is an instance of the method's ``Options`` (None: its defaults); the
        support set and the options were validated by ``adapt_tensors`` before this runs.
        """

    @abstractmethod
    def score(self, state: TaskState, query_x: torch.Tensor) -> torch.Tensor:
        """Logits [B, n_way] of model-ready queries under a task state."""

    def score_with_novelty(self, state: TaskState, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``score``'s logits and each query's novelty [B] (larger: less like every support class).

        The default novelty is minus the largest logit (:mod:`._open_set`); a method whose
        logits are normalised over the support (Matching's log-attention) measures it
        before that normalisation instead.
        """
        logits = self.score(state, query_x)
        return logits, max_logit_novelty(logits)

    def held_out_novelty(
        self, x: torch.Tensor, y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(known, unknown) novelty of support examples scored by tasks adapted without them (``reject="auto"``).

        Adapts once per fold and once per class left out; ProtoNet overrides it to embed the support once.
        """
        device = self.device

        def novelty_of(fit_x: torch.Tensor, fit_y: torch.Tensor, n: int, held_x: torch.Tensor) -> torch.Tensor:
            state = self.fit_task(fit_x, fit_y, n, options)
            return self.score_with_novelty(state, held_x)[1]

        with torch.no_grad():
            return held_out_scores(novelty_of, x.to(device), y.to(device), n_way)

    def novelty_threshold(
        self, x: torch.Tensor, y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> float:
        """The ``reject="auto"`` threshold of the task adapted on this support set, from that support set alone."""
        known, unknown = self.frozen_or_self().held_out_novelty(x, y, n_way, options)
        return choose_threshold(known.cpu(), unknown.cpu(), self.method)

    def task_layout(self) -> Layout | None:
        """The class axis of each task-state tensor, when the state is made of per-class pieces
        (``AdaptedModel.add_classes`` / ``remove_classes``); None when it depends on the whole support set."""
        return None

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities from ``score``'s output; softmax unless the paper says otherwise."""
        return logits.softmax(dim=-1)

    def task_probabilities(self, state: TaskState) -> Callable[[torch.Tensor], torch.Tensor]:
        """The probability rule of a task state's logits: ``probabilities``, unless the state scores otherwise
        (a fine-tuned task's cosine head is a softmax classifier whatever the method's rule)."""
        return self.probabilities

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta-training loss of one episode and the query logits (for accuracy)."""
        state = self.fit_task(episode.support_x, episode.support_y, episode.n_way)
        logits = self.score(state, episode.query_x)
        return F.cross_entropy(logits, episode.query_y), logits

    def calibrate(self, train_data: LabelledImages) -> None:
        """Statistics of the meta-training data a method keeps (ProtoNet's centring mean).

        The training loop runs it before each validation, so the kept weights carry the
        statistics they were validated with.
        """

    def meta_gradients(self, episodes: Sequence[Episode], metrics: StepMetrics) -> None:
        """Accumulate the meta-gradient of a meta-batch into ``.grad`` (the mean over its episodes).

        The training loop calls this, then (after averaging ``.grad`` across processes
        when there are several) ``outer_update``.
        """
        for episode in episodes:
            loss, logits = self.episode_loss(episode)
            (loss / len(episodes)).backward()
            metrics.add(loss, logits, episode.query_y)

    def outer_update(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Apply the accumulated meta-gradient: an optimiser step unless the paper's update is another."""
        if optimizer is None:
            raise InputError(f"{self.method} meta-training needs an optimiser for its outer update")
        optimizer.step()

    def check_can_train(self, episodes: int) -> None:
        """Refuse a run that could not change the weights (Reptile with its step size annealed to 0)."""

    def train_step(
        self,
        episodes: Sequence[Episode],
        optimizer: torch.optim.Optimizer | None,
        reduce_gradients: Callable[[nn.Module], None] | None = None,
    ) -> dict[str, float]:
        """One meta-update from a batch of episodes; returns the mean loss and query accuracy of this process.

        ``reduce_gradients`` runs between the meta-gradient and the outer update (several
        processes average ``.grad`` there).
        """
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        else:
            self.zero_grad(set_to_none=True)
        metrics = StepMetrics()
        self.meta_gradients(episodes, metrics)
        if reduce_gradients is not None:
            reduce_gradients(self)
        self.outer_update(optimizer)
        return metrics.summary()

    def export_module(self, state: TaskState) -> nn.Module:
        """An ``nn.Module`` mapping a model-ready batch to logits with the task state baked in.

        The scorer of the task network (``predict`` and the ONNX file), called on the inference twin.
        It may return ``(logits, novelty)``; a module returning logits alone gets the default novelty.
        """
        return _ScoreWithState(self, state)

    def transductive_module(self, state: TaskState) -> nn.Module:
        """The scorer of ``predict(..., transductive=True)``: images -> (logits, novelty), the task refined by
        the query batch it scores. Called on the inference twin; a method without one refuses."""
        raise InputError(
            f"transductive prediction refines prototypes with the query batch; a {self.method} task has none: "
            "use a protonet model (e.g. protonet-photos) or predict without transductive=True"
        )

    # ------------------------------------------------------- inference twin
    def freeze(self, engine: EngineFactory | None = None) -> Learner:
        """Build, once, the inference twin every later ``adapt`` and evaluation use; returns self.

        The twin is a copy of this moment's weights with a folded backbone (:class:`FrozenBackbone`);
        ``engine`` runs its backbone elsewhere (``fs.load(..., runtime="onnxruntime")``). ``train()``
        and ``unfreeze()`` drop it, ``load_state_dict`` and ``.to()`` rebuild it; a training loop of
        your own that steps the weights without ``learner.train()`` must call ``unfreeze()`` first.
        """
        self.__dict__["_engine"] = engine
        self.__dict__["_twin"] = self.inference_twin(engine) if self.has_inference_twin else self
        return self

    def unfreeze(self) -> Learner:
        """Drop the inference twin: ``adapt`` builds one per task again from the current weights."""
        self.__dict__.pop("_twin", None)
        self.__dict__.pop("_engine", None)
        return self

    @property
    def frozen(self) -> bool:
        return "_twin" in self.__dict__

    def frozen_or_self(self) -> Learner:
        """The twin of a frozen learner, else the learner itself (state-only work: evaluation, calibration)."""
        return self.__dict__.get("_twin", self)

    def inference_learner(self) -> Learner:
        """The learner a task network is built on: the frozen twin, else a twin built now (never the live
        learner where it has a twin to build: a task must not change when the learner trains)."""
        twin = self.__dict__.get("_twin")
        if twin is not None:
            return twin
        return self.inference_twin() if self.has_inference_twin else self

    def inference_twin(self, engine: EngineFactory | None = None) -> Learner:
        """A frozen copy of this learner for inference, its backbone a :class:`FrozenBackbone`."""
        memo: dict[int, Any] = {id(self.backbone): FrozenBackbone(self.backbone, engine)}
        memo.update({id(self.__dict__[key]): None for key in ("_twin", "_engine") if key in self.__dict__})
        twin = copy.deepcopy(self, memo).unfreeze()  # (the copy keeps no twin of its own)
        nn.Module.train(twin, False)
        return twin.requires_grad_(False)

    def task_network(self, state: TaskState, transductive: bool = False) -> TaskNetwork:
        """The task network of ``state``: built once per task, run by ``predict``, serialised by export.

        ``transductive``: the network of ``predict(..., transductive=True)``, whose answers depend on the batch.
        """
        learner = self.inference_learner()
        scorer = learner.transductive_module(state) if transductive else learner.export_module(state)
        return TaskNetwork(scorer, learner.task_probabilities(state))

    def train(self, mode: bool = True) -> Learner:
        """Training mode also drops the inference twin (:meth:`freeze`): the weights are about to change."""
        if mode:
            self.unfreeze()
        return super().train(mode)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Learner:
        super()._apply(fn, recurse)
        return self.freeze(self.__dict__["_engine"]) if self.frozen else self  # moved or cast: the twin follows

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.frozen:  # new weights: a new twin
            self.freeze(self.__dict__["_engine"])
        return result

    # ------------------------------------------------------- shared API
    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def preprocess(self, images: Sequence[ImageLike] | ImageLike) -> torch.Tensor:
        """The exact [B, C, H, W] tensor this learner consumes for these images."""
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            images = [images]  # type: ignore[list-item]
        return self.preprocessor(list(images))

    def adapt(self, support: SupportSet, **options: object) -> AdaptedModel:
        """Adapt to a support set; returns the task, leaves the learner untouched.

        ``options`` go to the method's ``fit_task`` (e.g. MAML's ``steps`` and ``lr``). The task's
        network is built here, once, on the inference twin (:meth:`inference_learner`).
        """
        if not isinstance(support, SupportSet):
            raise InputError(
                f"adapt takes a fs.SupportSet, got {type(support).__name__}; build one with "
                "SupportSet.from_folder / from_mapping / from_tensors"
            )
        if support.task != self.kind.name:  # a SupportSet is valid in itself: only its kind can be wrong here
            labels = "integer class indices" if self.kind.classifies else "floating-point targets"
            raise InputError(
                f"this {self.method} model's tasks are {self.kind.name}: its support labels must be {labels}, "
                f"but the support set is a {support.task} set"
            )
        x, y = support.to_tensors(self.preprocessor)
        self.domain_watch.warn(stacklevel=2)  # photos given to a handwriting model: say so, once per learner
        parsed = self.adapt_options(options)
        return self.adapted_on(x, y, support.class_names, parsed, support.task)

    def adapted_on(
        self, x: torch.Tensor, y: torch.Tensor, class_names: list[str], options: StrictModel, task: str
    ) -> AdaptedModel:
        """The task adapted on a model-ready support (validated) with parsed ``options``: ``adapt``'s work, also
        what a fine-tuned task grows or shrinks by (adapting again on its kept support)."""
        learner = self.inference_learner()
        state = learner.detached_task(x, y, len(class_names), options)
        network = TaskNetwork(learner.export_module(state), learner.task_probabilities(state))
        kept = TaskSupport(x, y, options) if self.kind.classifies else None
        return AdaptedModel(self, state, class_names, task=task, support=kept, network=network)

    def adapt_tensors(self, x: torch.Tensor, y: torch.Tensor, n_way: int, **options: object) -> TaskState:
        """The task state for model-ready tensors; the support set and options are validated here.

        Runs under ``no_grad`` (on the inference twin of a frozen learner); a method whose adaptation
        needs gradients (MAML) opens ``torch.enable_grad()`` inside its ``fit_task``.
        """
        parsed = self.adapt_options(options)
        check_support(x, y, n_way, self.kind)
        return self.frozen_or_self().detached_task(x, y, n_way, parsed)

    def detached_task(self, x: torch.Tensor, y: torch.Tensor, n_way: int, options: StrictModel) -> TaskState:
        """``fit_task`` on this learner's device, under ``no_grad``, its state cut from the learner's graph."""
        device = self.device
        with torch.no_grad():
            state = self.fit_task(x.to(device), y.to(device), n_way, options)
        return {name: tensor.detach() for name, tensor in state.items()}

    def adapt_classes(self, x: torch.Tensor, y: torch.Tensor, n_way: int) -> TaskState:
        """The task state of some classes alone, possibly one, to add to an adapted task (``task_layout``)."""
        if self.task_layout() is None:
            raise InputError(f"a {self.method} task state depends on the whole support set; adapt on all of it")
        check_support(x, y, n_way, min_classes=1)
        return self.inference_learner().detached_task(x, y, n_way, self.Options())

    @property
    def kind(self) -> TaskKind:
        """What this learner's tasks predict: classes, or values (a ``task="regression"`` config)."""
        return task_kind(getattr(self.config, "task", "classification"))

    def adapt_options(self, options: dict[str, object]) -> StrictModel:
        """``adapt``'s keyword options as the method's ``Options``, or one line saying what it takes."""
        try:
            return self.Options(**options)
        except ValidationError as exc:
            unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
            problem = f"unknown {unknown}" if len(unknown) == len(exc.errors()) else describe_validation_error(exc)
            accepted = ", ".join(self.Options.model_fields) or "no options"
            why = (self.Options.__doc__ or "").strip().splitlines()[0] if self.Options.model_fields else ""
            raise InputError(
                f"{self.method} adapt options: {problem}; {self.method} takes {accepted}" + (f" ({why})" if why else "")
            ) from None

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write this learner as a checkpoint folder (``weights.safetensors`` + ``config.json``)."""
        return save_learner(self, folder, overwrite=overwrite)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, config={self.config!r}"


class StateBuffers(nn.Module):
    """A task state held as buffers, so it moves and traces with the module that scores by it; ``state`` reads
    it back as the dict the learner's hooks take."""

    def __init__(self, state: TaskState) -> None:
        super().__init__()
        self.names = list(state)
        for index, name in enumerate(self.names):
            self.register_buffer(f"state_{index}", state[name])

    @property
    def state(self) -> TaskState:
        return {name: getattr(self, f"state_{i}") for i, name in enumerate(self.names)}


class _ScoreWithState(StateBuffers):
    """Generic export wrapper: the learner's ``score`` with the task state as buffers."""

    def __init__(self, learner: Learner, state: TaskState) -> None:
        super().__init__(state)
        self.learner = learner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.learner.score_with_novelty(self.state, x)


def check_support(x: object, y: object, n_way: int, kind: TaskKind = CLASSIFICATION, min_classes: int = 2) -> None:
    """Refuse a support set no method can adapt to, in one line: ``adapt_tensors``' guard (evaluation,
    training, tensor users), as ``fs.SupportSet`` is ``adapt``'s. The targets are the task kind's to check."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise InputError(
            f"support images and labels must be torch tensors, got {type(x).__name__} and {type(y).__name__}"
        )
    if x.ndim < 2:
        raise InputError(f"support images must be [N, C, H, W]; got shape {tuple(x.shape)}")
    if not all_finite(x):
        raise InputError("support images contain NaN or infinite values")
    kind.check_targets(y, len(x), n_way, min_classes)


def class_means(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Per-class mean of embeddings [N, D] -> [n_way, D] (ProtoNet's prototypes, eq. 1)."""
    one_hot = F.one_hot(labels, n_way).to(embeddings.dtype)
    counts = one_hot.sum(0).clamp_min(1).unsqueeze(1)
    return one_hot.t() @ embeddings / counts
