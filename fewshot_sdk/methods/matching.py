"""Matching Networks for one-shot learning (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016).

A query's label distribution is an attention-weighted sum of the support labels
(eq. 1-2):

    P(y | x, S) = sum_i a(x, x_i) y_i,    a(x, x_i) = softmax_i( cos(f(x), g(x_i)) )

and training maximises log P(y | x, S) on episodes. Two embeddings:

- simple (``fce=False``): f = g = the CNN;
- Full Context Embeddings (``fce=True``, registered as ``matching-fce``; appendix A):
  g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i), a bidirectional LSTM over the support
  embeddings g'(x_i) with a skip connection; f(x, S) = attLSTM(f'(x), g(S), K) is
  an LSTM without input-dependent hidden state that reads g(S) for K steps
  (:class:`~fewshot_sdk.methods._metric_fce.AttentionReadLSTM`).

``score`` returns log P(y | x, S) (clamped away from log 0), so the shared
cross-entropy is the paper's objective and softmax of the logits recovers P.

``temperature`` divides the cosines before the softmax. The paper uses none (1);
cosines of non-negative (ReLU) features crowd into [0, 1], so the attention is
nearly uniform over 20 supports and learns slowly: the shipped models use 0.05
(in a 300-episode 20-way trial, validation 5-way 1-shot 96.3% against 93.0% at
0.1, and about 82% at 1 after 1000 episodes).

``adapt(support, finetune=...)`` fine-tunes the end of the CNN and a cosine head on the support
(:mod:`.finetunable`): the head is started at the class means of the CNN's embeddings g'(x_i), not
of FCE's g(x_i, S), since a head scores one image at a time; the task's novelty stays the untuned
network's.
"""

from __future__ import annotations

import torch
from pydantic import Field

from fewshot_sdk.config import StrictModel
from fewshot_sdk.kernels import pairwise_logits, pairwise_softmax
from fewshot_sdk.methods._metric_common import one_hot
from fewshot_sdk.methods._metric_fce import AttentionReadLSTM, SupportContext
from fewshot_sdk.methods.base import TaskState
from fewshot_sdk.methods.finetunable import FineTunable
from fewshot_sdk.registry import register_method
from fewshot_sdk.task.layout import Layout

#: Floor on P(y | x, S) before the log: a class with no attention gets a large negative logit, not -inf.
PROBABILITY_FLOOR = 1e-12


class MatchingConfig(StrictModel):
    fce: bool = Field(False, description="Full Context Embeddings (bidirectional LSTM g, attention-LSTM f)")
    processing_steps: int = Field(5, ge=1, description="FCE: K read steps of the attention LSTM f")
    temperature: float = Field(1.0, gt=0, description="divides the cosine before the softmax (paper: 1)")


class MatchingFCEConfig(MatchingConfig):
    fce: bool = Field(True, description="Full Context Embeddings (bidirectional LSTM g, attention-LSTM f)")


@register_method
class MatchingNet(FineTunable):
    method = "matching"
    Config = MatchingConfig
    config: MatchingConfig
    task_independent_embedding = True

    def build(self) -> None:
        self.support_context: SupportContext | None = None
        self.query_reader: AttentionReadLSTM | None = None
        if self.config.fce:
            features = self.backbone.out_features
            self.support_context = SupportContext(features)
            self.query_reader = AttentionReadLSTM(features, self.config.processing_steps)

    def embed_support(self, support_x: torch.Tensor) -> torch.Tensor:
        """g(x_i, S): the CNN, then (FCE) the bidirectional LSTM over the support sequence."""
        embeddings = self.backbone(support_x)
        return embeddings if self.support_context is None else self.support_context(embeddings)

    def embed_query(self, embeddings: torch.Tensor, support_embeddings: torch.Tensor) -> torch.Tensor:
        """f(x, S) of the CNN's embeddings f'(x): themselves, or (FCE) after K attention reads of g(S)."""
        return embeddings if self.query_reader is None else self.query_reader(embeddings, support_embeddings)

    def untuned_task(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int) -> TaskState:
        """The support embeddings g(x_i, S) and their one-hot labels y_i."""
        support = self.embed_support(support_x)
        return {"support": support, "support_classes": one_hot(support_y, n_way, support)}

    def task_layout(self) -> Layout | None:
        """Stored support embeddings; with Full Context Embeddings every embedding depends on the whole support."""
        return None if self.config.fce else {"support": "example_rows", "support_classes": "one_hot"}

    def read(self, state: TaskState, queries: torch.Tensor) -> torch.Tensor:
        """log P(y | x, S) of embedded queries."""
        read = pairwise_softmax(
            queries, state["support"], "cosine", values=state["support_classes"], temperature=self.config.temperature
        )
        return read.clamp_min(PROBABILITY_FLOOR).log()

    def scores(self, state: TaskState, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log P(y | x, S), the cosine-attention read of the support one-hot labels (eq. 1-2), of the CNN's
        embeddings of queries. Novelty: minus the best cosine to any support embedding.

        The attention is normalised over the support, so its log-probabilities say which
        support example is nearest, not how near: a query unlike every support example
        still reads one class with probability near 1.
        """
        queries = self.embed_query(features, state["support"])
        cosines = pairwise_logits(queries, state["support"], "cosine")
        return self.read(state, queries), -cosines.amax(dim=-1)

    def tuned_features(self, features: torch.Tensor) -> torch.Tensor:
        """The head sees the CNN's embedding: FCE's LSTMs read the whole support, which a per-image head cannot."""
        return features


@register_method
class MatchingFCE(MatchingNet):
    """``matching-fce``: Matching Networks whose config turns Full Context Embeddings on by default.

    Checkpoints record ``method="matching-fce"`` and ``fce=true``, so they reload as FCE.
    """

    method = "matching-fce"
    Config = MatchingFCEConfig
    config: MatchingFCEConfig
