"""Prototypical Networks (Snell, Swersky & Zemel 2017).

Each class is represented by the mean of its embedded support examples, its
*prototype* (eq. 1: c_k = 1/|S_k| sum f(x_i)); a query is classified by a softmax
over negative squared euclidean distances to the prototypes (eq. 2:
p(y=k|x) = softmax_k(-d(f(x), c_k))). Training is the default episodic
cross-entropy on the queries.

``feature_norm`` adds SimpleShot's feature transforms (Wang et al. 2019) before the
prototypes are taken: ``l2`` puts every embedding on the unit sphere, so a photo's
brightness or a feature's overall scale stops dominating the distance; ``centered-l2``
first subtracts the mean feature of the meta-training classes (a buffer computed by
:meth:`ProtoNet.calibrate` before each validation, saved in the checkpoint). On the sphere
squared distances lie in [0, 4], so these models use a small ``temperature`` to give
probabilities that are not flat.

``adapt(support, finetune=...)`` fine-tunes the end of the backbone and a cosine head on the support
(:mod:`.finetunable`, :mod:`.finetuning`), the head started at the normalised prototypes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.errors import InputError
from fewshot_sdk.kernels import pairwise_logits
from fewshot_sdk.methods.base import TaskState, class_means
from fewshot_sdk.methods.finetunable import FineTunable
from fewshot_sdk.methods.finetuning import is_finetuned
from fewshot_sdk.methods.transductive_prototypes import refine
from fewshot_sdk.registry import register_method
from fewshot_sdk.task.layout import Layout
from fewshot_sdk.task.open_set import held_out_scores, max_logit_novelty


class ProtoNetConfig(StrictModel):
    metric: Literal["sqeuclidean", "cosine"] = "sqeuclidean"
    temperature: float = Field(1.0, gt=0, description="logits are -distance / temperature")
    feature_norm: Literal["none", "l2", "centered-l2", "sqrt-l2"] = Field(
        "none", description="SimpleShot transform of embeddings before prototypes (centered-l2: minus the train mean)"
    )


@register_method
class ProtoNet(FineTunable):
    method = "protonet"
    Config = ProtoNetConfig
    config: ProtoNetConfig
    task_independent_embedding = True

    def build(self) -> None:
        if self.backbone.side_levels and self.config.feature_norm == "none":
            raise InputError(
                "the backbone's side_levels are weighed against unit-norm head features: "
                "pick feature_norm 'l2', 'sqrt-l2' or 'centered-l2', or drop side_levels"
            )
        if self.config.feature_norm == "centered-l2":
            self.register_buffer("feature_mean", torch.zeros(self.backbone.out_features))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """f(x), after the configured SimpleShot transform."""
        return self.transform(self.backbone(x))

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """The configured SimpleShot transform of backbone outputs.

        With the backbone's side levels, it applies to the head's features, and each level joins
        them L2-normalised and weighted (``BackboneConfig.side_levels``).
        """
        if self.config.feature_norm == "centered-l2":
            features = features - self.feature_mean
        features, sides = self.backbone.split_levels(features)
        if self.config.feature_norm == "sqrt-l2":  # features after a ReLU: never negative
            features = features.clamp_min(0).sqrt()
        if self.config.feature_norm != "none":
            features = F.normalize(features, dim=-1)
        return self.backbone.join_levels(features, sides)

    def calibrate(self, train_data: LabelledImages) -> None:
        """Centred L2 needs the mean embedding of the meta-training classes (class-balanced)."""
        if self.config.feature_norm != "centered-l2":
            return
        features = self.backbone.stage_outputs(train_data.images, len(self.backbone.stages))
        features = features.flatten(1) if self.backbone.flatten else features
        per_class = class_means(features.to(self.feature_mean), train_data.labels, train_data.num_classes)
        self.feature_mean.copy_(per_class.mean(0))

    def untuned_task(self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int) -> TaskState:
        """The prototypes (eq. 1) and each class's shots (the transductive refinement weighs by them)."""
        shots = torch.bincount(support_y, minlength=n_way)
        return {"prototypes": class_means(self.embed(support_x), support_y, n_way), "shots": shots}

    def task_layout(self) -> Layout:
        return {"prototypes": "class_rows", "shots": "class_rows"}

    def scores(self, state: TaskState, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 2's logits of backbone outputs against the prototypes; novelty: minus the largest."""
        logits = self.prototype_logits(self.transform(features), state["prototypes"])
        return logits, max_logit_novelty(logits)

    def tuned_features(self, features: torch.Tensor) -> torch.Tensor:
        """The head sees the embedding the prototypes are means of (after the SimpleShot transform)."""
        return self.transform(features)

    def prototype_logits(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """-d(f(x), c_k) / temperature (eq. 2's logits) for embedded queries."""
        return pairwise_logits(features, prototypes, self.config.metric, temperature=self.config.temperature)

    def held_out_novelty(
        self, x: torch.Tensor, y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out scores from one embedding of the support: a prototype needs only its class's features.

        A photo support set is embedded once (as ``adapt`` does), not once per fold and left-out class.
        """
        with torch.no_grad():
            features = self.embed(x.to(self.device))

            def novelty_of(fit: torch.Tensor, fit_y: torch.Tensor, n: int, held: torch.Tensor) -> torch.Tensor:
                return max_logit_novelty(self.prototype_logits(held, class_means(fit, fit_y, n)))

            return held_out_scores(novelty_of, features, y.to(features.device), n_way, min_classes=1)

    def export_module(self, state: TaskState) -> nn.Module:
        if self.config.metric != "sqeuclidean" or is_finetuned(state):
            return super().export_module(state)
        return PrototypeLinearHead(_Embedding(self), state["prototypes"], self.config.temperature)

    def transductive_module(self, state: TaskState) -> nn.Module:
        """Prototypes refined by each query batch (:mod:`.transductive_prototypes`) before they score it.

        A task saved before ProtoNet kept its shots counts every class as one shot.
        """
        if is_finetuned(state):
            return self.finetuned_scorer(state, transductive=True)
        shots = state.get("shots", torch.ones(len(state["prototypes"]), dtype=torch.long))
        return RefinedPrototypes(self, state["prototypes"], shots)


class RefinedPrototypes(nn.Module):
    """images -> (logits, novelty) against prototypes refined by the batch itself (transductive)."""

    def __init__(self, learner: ProtoNet, prototypes: torch.Tensor, shots: torch.Tensor) -> None:
        super().__init__()
        self.learner = learner
        self.register_buffer("prototypes", prototypes)
        self.register_buffer("shots", shots)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.learner.embed(x)
        prototypes, queries = refine(self.prototypes, self.shots, features)
        logits = self.learner.prototype_logits(queries, prototypes)
        # novelty as the inductive task measures it, so a threshold calibrated on the support still applies
        novelty = max_logit_novelty(self.learner.prototype_logits(features, self.prototypes))
        return logits, novelty


class _Embedding(nn.Module):
    """``ProtoNet.embed`` as a module, so the exported graph carries the feature transform."""

    def __init__(self, learner: ProtoNet) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.learner.embed(x)


class PrototypeLinearHead(nn.Module):
    """-|f - c|^2 as a linear layer: 2 f.c - |c|^2, dropping -|f|^2, which is constant per row.

    The row constant cancels in the softmax, so probabilities are exact; the
    exported logits differ from ``predict``'s by that per-row shift (argmax equal).
    The novelty output, the distance to the nearest prototype, adds |f|^2 back.
    """

    def __init__(self, backbone: nn.Module, prototypes: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(prototypes.shape[1], prototypes.shape[0])
        self.temperature = temperature
        with torch.no_grad():
            self.head.weight.copy_(2 * prototypes / temperature)
            self.head.bias.copy_(-(prototypes**2).sum(1) / temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        logits = self.head(features)
        novelty = (features**2).sum(1) / self.temperature + max_logit_novelty(logits)
        return logits, novelty
