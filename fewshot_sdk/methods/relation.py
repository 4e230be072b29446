"""Learning to Compare: Relation Network for few-shot learning (Sung, Yang, Zhang, Xiang, Torr & Hospedales 2018).

The embedding module f keeps feature maps (Conv4 with two pooled blocks: 28x28 -> 64x7x7 on
Omniglot). A class is represented by the element-wise *sum* of its support feature maps (sec. 3.2,
K-shot), and the relation module g scores a query against a class from their channel-wise
concatenation (eq. 1):

    r_{q,c} = g( C(f(x_q), f_c) ),   f_c = sum_{i: y_i = c} f(x_i)

g is two conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pooling) and two fully connected layers
(ReLU, then one sigmoid unit). Training regresses r onto the match indicator with mean squared error
(eq. 2): sum (r_{q,c} - 1[y_q = c])^2. ``score`` returns the relation logits (before the sigmoid);
probabilities are the sigmoid relation scores normalised to sum to one.

The paper trains one model per K, so the sum matches what its relation module saw. A model used at
another K needs ``shot_pooling="mean"`` (the shipped 1-shot-trained model does; sum = mean at K = 1):
summed maps at K = 5 are 5x the scale it was trained on (benchmarks/results/relation.md).

``adapt(support, finetune=...)`` fine-tunes the end of the embedding module and a cosine head on the
flattened support feature maps (:mod:`.finetunable`); such a task predicts with the head's softmax and
keeps the untuned relation scores' novelty.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods._metric_common import log_sigmoid, normalised_sigmoid, one_hot
from fewshot_sdk.methods.base import TaskState
from fewshot_sdk.methods.finetunable import FineTunable
from fewshot_sdk.models.backbones import conv_block
from fewshot_sdk.registry import register_method
from fewshot_sdk.task.layout import Layout
from fewshot_sdk.task.open_set import max_logit_novelty


class RelationConfig(StrictModel):
    channels: int = Field(64, ge=1, description="filters of the relation module's conv blocks")
    hidden: int = Field(8, ge=1, description="units of the relation module's first FC layer (paper: 8)")
    shot_pooling: Literal["sum", "mean"] = Field("sum", description="class feature map from K shots (paper: sum)")


class RelationModule(nn.Module):
    """g_phi on pairs of feature maps.

    ``forward`` takes concatenated pairs as the paper writes it; ``pairwise`` scores every
    query against every class without building the [B * C, 2 * channels, H, W] concatenation:
    the first convolution is linear in its input channels, so
    conv(W, [q, c]) = conv(W_q, q) + conv(W_c, c) + bias exactly, and each half is computed once.
    """

    def __init__(self, feature_shape: tuple[int, ...], channels: int, hidden: int) -> None:
        super().__init__()
        if len(feature_shape) != 3:
            raise InputError(
                f"Relation Networks need a backbone that outputs feature maps [C, H, W]; this one outputs "
                f"{tuple(feature_shape)} (use conv4 with flatten=False, or a custom module returning maps)"
            )
        self.in_channels = int(feature_shape[0])
        self.block1 = conv_block(2 * self.in_channels, channels, pool=True)
        self.block2 = conv_block(channels, channels, pool=True)
        height, width = int(feature_shape[1]), int(feature_shape[2])
        if height < 4 or width < 4:
            raise InputError(
                f"the relation module pools twice and needs feature maps of at least 4x4; the backbone gives "
                f"{height}x{width} (use fewer pooled backbone blocks or larger images)"
            )
        flat = channels * (height // 2 // 2) * (width // 2 // 2)
        self.fc = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def head(self, first_conv_out: torch.Tensor) -> torch.Tensor:
        """Everything after the first convolution: [P, channels, H, W] -> [P] relation logits."""
        out = self.block2(self.block1[1:](first_conv_out))
        return self.fc(out.flatten(1)).squeeze(-1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """[P, 2C, H, W] concatenated [f(x_q), f_c] -> [P] logits of r (before the sigmoid)."""
        return self.head(self.block1[0](pairs))

    def pairwise(self, queries: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] query maps x [N, C, H, W] class maps -> [B, N] logits of g([f(x_q), f_c])."""
        conv: nn.Conv2d = self.block1[0]  # type: ignore[assignment]
        weight = conv.weight.to(queries.dtype)
        bias = None if conv.bias is None else conv.bias.to(queries.dtype)
        query_part = F.conv2d(queries, weight[:, : self.in_channels], bias, conv.stride, conv.padding)
        class_part = F.conv2d(classes, weight[:, self.in_channels :], None, conv.stride, conv.padding)
        combined = (query_part[:, None] + class_part[None]).flatten(0, 1)
        return self.head(combined).view(-1, classes.shape[0])  # no Python ints of the batch size: ONNX export


@register_method
class RelationNet(FineTunable):
    method = "relation"
    Config = RelationConfig
    config: RelationConfig
    task_independent_embedding = True
    default_backbone: ClassVar[dict[str, object]] = {"pooled_blocks": 2, "flatten": False}

    def build(self) -> None:
        self.relation = RelationModule(self.backbone.out_shape, self.config.channels, self.config.hidden)

    def maps(self, features: torch.Tensor) -> torch.Tensor:
        """f_phi(x) as [B, C, H, W] from the backbone's output, whatever its flatten setting."""
        return features if features.dim() == 4 else features.unflatten(1, self.backbone.out_shape)

    def untuned_task(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int) -> TaskState:
        """Class feature maps: the sum (paper) or mean of each class's support feature maps."""
        maps = self.maps(self.backbone(support_x))
        members = one_hot(support_y, n_way, maps)
        if self.config.shot_pooling == "mean":
            members = members / members.sum(0, keepdim=True)
        pooled = members.t() @ maps.flatten(1)
        return {"class_maps": pooled.view(n_way, *maps.shape[1:])}

    def task_layout(self) -> Layout:
        return {"class_maps": "class_rows"}

    def scores(self, state: TaskState, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relation logits [B, n_way] (sigmoid of them is the paper's relation score r in (0, 1)); novelty: minus
        the largest."""
        logits = self.relation.pairwise(self.maps(features), state["class_maps"])
        return logits, max_logit_novelty(logits)

    def tuned_features(self, features: torch.Tensor) -> torch.Tensor:
        """The head sees the flattened feature maps (the relation module compares maps; a cosine head, vectors)."""
        return features.flatten(1)

    def softmax_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """log sigmoid(r): softmax of it is :meth:`probabilities`' normalised relation scores."""
        return log_sigmoid(logits)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Relation scores normalised to sum to one over the classes."""
        return normalised_sigmoid(logits)

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error between r_{q,c} and 1[y_q = c] (eq. 2)."""
        state = self.fit_task(episode.support_x, episode.support_y, episode.n_way)
        logits = self.score(state, episode.query_x)
        targets = one_hot(episode.query_y, episode.n_way, logits)
        return F.mse_loss(torch.sigmoid(logits), targets), logits
