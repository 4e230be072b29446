"""Siamese Neural Networks for one-shot image recognition (Koch, Zemel & Salakhutdinov 2015).

Twin networks share one embedding h(x): the configured conv backbone, optionally followed by Koch's
fully connected sigmoid layer h(x) = sigmoid(W conv(x) + b) (``embedding`` units; Koch: 4096 at
105x105). Off by default: at our training budget the bare conv features learned faster
(benchmarks/results/siamese.md). A pair is scored by the weighted L1 distance between its
embeddings followed by a sigmoid unit (Koch eq. 1):

    p(x1, x2) = sigmoid(b - sum_j w_j |h_j(x1) - h_j(x2)|)     ("same class")

(Koch writes sum_j alpha_j |.| with learned alpha; w = -alpha keeps the kernel's sign convention
``pairwise_logits(..., "l1", weights=w) = -sum_j w_j |q_j - s_j|``.) Training is binary
cross-entropy on same/different pairs of training-class images under random affine distortions
(:mod:`._metric_pairs`). A one-shot task is solved as in Koch's one-shot experiments: score the
query against every support image and take, per class, the best score; probabilities are those
per-class sigmoid scores normalised to sum to one.

``adapt(support, finetune=...)`` fine-tunes the end of the conv backbone and a cosine head on h(x) of
the support (:mod:`.finetunable`); such a task predicts with the head's softmax and keeps the untuned
twin scores' novelty.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.kernels import pairwise_logits
from fewshot_sdk.methods._metric_common import log_sigmoid, normalised_sigmoid, one_hot, per_class_max
from fewshot_sdk.methods._metric_pairs import affine_distort, balanced_verification_loss
from fewshot_sdk.methods.base import TaskState
from fewshot_sdk.methods.finetunable import FineTunable
from fewshot_sdk.registry import register_method
from fewshot_sdk.task.layout import Layout
from fewshot_sdk.task.open_set import max_logit_novelty


class SiameseConfig(StrictModel):
    embedding: int = Field(
        0, ge=0, description="0: weighted L1 on the conv features; N: Koch's sigmoid FC layer of N units first"
    )
    augment: bool = Field(True, description="Koch's random affine distortions of training images")


@register_method
class SiameseNet(FineTunable):
    method = "siamese"
    Config = SiameseConfig
    config: SiameseConfig
    task_independent_embedding = True

    def build(self) -> None:
        units = self.config.embedding or self.backbone.out_features
        self.head: nn.Module = nn.Identity()
        if self.config.embedding:
            self.head = nn.Sequential(nn.Linear(self.backbone.out_features, units), nn.Sigmoid())
        # w_j > 0: a larger distance means "less likely the same class". Initial logits are O(1).
        self.distance_weights = nn.Parameter(torch.full((units,), 4.0 / math.sqrt(units)))
        self.bias = nn.Parameter(torch.tensor(1.0))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """h(x): the twin network's feature vector."""
        return self.head(self.backbone(x))

    def pair_logits(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Logit of "same class" for every pair of embeddings: [M, D] x [N, D] -> [M, N] (Koch eq. 1)."""
        weights = self.distance_weights.to(first.dtype)
        return self.bias.to(first.dtype) + pairwise_logits(first, second, "l1", weights=weights)

    def untuned_task(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int) -> TaskState:
        """Adaptation stores the support embeddings and their classes; nothing is trained."""
        embeddings = self.embed(support_x)
        return {"support": embeddings, "support_classes": one_hot(support_y, n_way, embeddings)}

    def task_layout(self) -> Layout:
        return {"support": "example_rows", "support_classes": "one_hot"}

    def scores(self, state: TaskState, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class, the best "same" logit of the query against that class's support images; novelty: minus
        the largest."""
        logits = per_class_max(self.pair_logits(self.head(features), state["support"]), state["support_classes"])
        return logits, max_logit_novelty(logits)

    def tuned_features(self, features: torch.Tensor) -> torch.Tensor:
        """The head sees h(x): the twin's FC layer (or identity), its weights read only: fine-tuning tunes the
        backbone's last stages and leaves no gradient on the learner."""
        weights = {name: tensor.detach() for name, tensor in self.head.named_parameters()}
        return functional_call(self.head, weights, (features,))

    def softmax_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """log sigmoid of the "same" logits: softmax of it is :meth:`probabilities`' normalised scores."""
        return log_sigmoid(logits)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class sigmoid scores normalised to sum to one."""
        return normalised_sigmoid(logits)

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Verification BCE on balanced same/different pairs among every image of the episode.

        Returns the one-shot logits of the episode's queries against its support (for accuracy).
        """
        images = torch.cat([episode.support_x, episode.query_x])
        labels = torch.cat([episode.support_y, episode.query_y])
        if self.training and self.config.augment:
            images = affine_distort(images)
        embeddings = self.embed(images)
        pairs = self.pair_logits(embeddings, embeddings)
        loss = balanced_verification_loss(pairs, labels)
        n_support = len(episode.support_y)
        support_classes = one_hot(episode.support_y, episode.n_way, pairs)
        logits = per_class_max(pairs[n_support:, :n_support].detach(), support_classes)
        return loss, logits
