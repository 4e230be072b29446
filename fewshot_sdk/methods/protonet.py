"""Prototypical Networks (Snell, Swersky & Zemel 2017).

Each class is represented by the mean of its embedded support examples, its
*prototype* (eq. 1: c_k = 1/|S_k| sum f(x_i)); a query is classified by a softmax
over negative squared euclidean distances to the prototypes (eq. 2:
p(y=k|x) = softmax_k(-d(f(x), c_k))). Training is the default episodic
cross-entropy on the queries.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.kernels import pairwise_logits
from fewshot_sdk.methods.base import Learner, TaskState, class_means
from fewshot_sdk.registry import register_method


class ProtoNetConfig(StrictModel):
    metric: Literal["sqeuclidean", "cosine"] = "sqeuclidean"
    temperature: float = 1.0


@register_method
class ProtoNet(Learner):
    method = "protonet"
    Config = ProtoNetConfig
    config: ProtoNetConfig

    def fit_task(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int) -> TaskState:
        return {"prototypes": class_means(self.backbone(support_x), support_y, n_way)}

    def score(self, state: TaskState, query_x: torch.Tensor) -> torch.Tensor:
        return pairwise_logits(
            self.backbone(query_x), state["prototypes"], self.config.metric, temperature=self.config.temperature
        )

    def export_module(self, state: TaskState) -> nn.Module:
        if self.config.metric != "sqeuclidean":
            return super().export_module(state)
        return PrototypeLinearHead(self.backbone, state["prototypes"], self.config.temperature)


class PrototypeLinearHead(nn.Module):
    """-|f - c|^2 as a linear layer: 2 f.c - |c|^2, dropping -|f|^2, which is constant per row.

    The row constant cancels in the softmax, so probabilities are exact; the
    exported logits differ from ``predict``'s by that per-row shift (argmax equal).
    """

    def __init__(self, backbone: nn.Module, prototypes: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(prototypes.shape[1], prototypes.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(2 * prototypes / temperature)
            self.head.bias.copy_(-(prototypes**2).sum(1) / temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
