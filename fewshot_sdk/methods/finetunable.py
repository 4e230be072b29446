"""A learner whose tasks may be fine-tuned on their support set: ``adapt(support, finetune=...)``.

Every metric method on a backbone takes the same option (ProtoNet, Matching with or without FCE,
Relation, Siamese), so the routing lives here once. A method writes its paper's adaptation and
scoring as hooks on the backbone's output, and says which features the cosine head sees; this base
then gives it the learner hooks (``fit_task``, ``score``, ``score_with_novelty``, ``export_module``),
which send a fine-tuned state (one holding ``finetuned.*``) to :class:`~.finetuning.FineTunedScorer`
and any other state to the method's own scoring. The untuned scoring is one function for both: the
fine-tuned task's novelty and ``untuned_weight`` sum come from exactly what the untuned task computes.

The hooks a method writes:

- ``untuned_task(support_x, support_y, n_way)``: the paper's task state (prototypes, stored embeddings,
  class feature maps);
- ``scores(state, features)``: ``(logits, novelty)`` of queries from the backbone's output;
- ``tuned_features(features)``: the head's features, [B, D], of a (tuned or untuned) backbone output;
- ``softmax_logits(logits)``, where the method's probabilities are not the softmax of its logits.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.methods.base import Learner, StateBuffers, TaskState
from fewshot_sdk.methods.finetuning import (
    FineTunedScorer,
    FineTuneOptions,
    finetuned_state,
    head_probabilities,
    is_finetuned,
    resolve,
    untuned_part,
)


class FineTunable(Learner):
    """A :class:`Learner` whose ``adapt`` takes ``finetune`` (module docstring: the hooks a method writes)."""

    Options: ClassVar[type[StrictModel]] = FineTuneOptions

    # ------------------------------------------------------- what a method writes
    @abstractmethod
    def untuned_task(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int) -> TaskState:
        """The paper's task state of the support set (differentiable w.r.t. the learner)."""

    @abstractmethod
    def scores(self, state: TaskState, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, novelty)`` of queries under an untuned state, from the backbone's output for them."""

    @abstractmethod
    def tuned_features(self, features: torch.Tensor) -> torch.Tensor:
        """The cosine head's features [B, D] of a backbone output; gradients reach the tuned tail through it."""

    def softmax_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits whose softmax is ``probabilities(logits)``: what ``untuned_weight`` adds (log-probabilities
        up to a constant a row)."""
        return logits

    # ------------------------------------------------------- the learner hooks, routed
    def fit_task(
        self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> TaskState:
        """The untuned state; with ``finetune``, the tuned tail and head besides (:func:`.finetuned_state`)."""
        state = self.untuned_task(support_x, support_y, n_way)
        shots = int(torch.bincount(support_y, minlength=n_way).min())
        settings = resolve(options.finetune, shots) if isinstance(options, FineTuneOptions) else None
        if settings is not None:
            tuned = finetuned_state(
                self.backbone, self.tuned_features, self.preprocess_config, support_x, support_y, n_way, settings
            )
            state.update(tuned)
        return state

    def score(self, state: TaskState, query_x: torch.Tensor) -> torch.Tensor:
        return self.score_with_novelty(state, query_x)[0]

    def score_with_novelty(self, state: TaskState, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A fine-tuned state scores through its tuned network (built for the call; a task builds it once)."""
        if is_finetuned(state):
            return self.export_module(state)(query_x)
        return self.scores(state, self.backbone(query_x))

    def export_module(self, state: TaskState) -> nn.Module:
        if is_finetuned(state):
            return self.finetuned_scorer(state)
        return super().export_module(state)

    def finetuned_scorer(self, state: TaskState, transductive: bool = False) -> FineTunedScorer:
        """The scorer of a fine-tuned state, its untuned part this method's own scoring."""
        untuned = UntunedScores(self, untuned_part(state))
        return FineTunedScorer(self.backbone, self.tuned_features, untuned, state, transductive)

    def task_probabilities(self, state: TaskState) -> Callable[[torch.Tensor], torch.Tensor]:
        """A fine-tuned task's logits are its cosine head's, a softmax classifier's, whatever the method's rule."""
        return head_probabilities if is_finetuned(state) else self.probabilities

    def held_out_novelty(
        self, x: torch.Tensor, y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A fine-tuned task's novelty is the untuned task's: ``reject="auto"`` calibrates on untuned held-out tasks
        (not one fine-tuning per fold and left-out class)."""
        return super().held_out_novelty(x, y, n_way, None)


class UntunedScores(StateBuffers):
    """backbone outputs -> (logits whose softmax is the untuned task's probabilities, its novelty).

    The untuned part of a fine-tuned task's scorer: ``learner.scores`` with the untuned state as buffers.
    """

    def __init__(self, learner: FineTunable, state: TaskState) -> None:
        super().__init__(state)
        self.learner = learner

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, novelty = self.learner.scores(self.state, features)
        return self.learner.softmax_logits(logits), novelty
