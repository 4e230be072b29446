"""What a task predicts, in one place: a class per query (classification) or values (regression).

MAML's sinusoid family (Finn et al. 2017, sec. 5.1) regresses; every other task classifies. A
kind answers what the rest of the SDK would otherwise branch on: how its support targets and its
queries are checked, how many outputs a network's head has and which loss trains it (cross-entropy
or mean squared error, MAML sec. 3.1), and whether the class-level features apply (open-set
answers, adding and removing classes, ONNX export).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from fewshot_sdk.errors import InputError
from fewshot_sdk.finite import all_finite

KindName = Literal["classification", "regression"]


class Classification:
    name: KindName = "classification"
    classifies = True

    def head_outputs(self, n_way: int) -> int:
        return n_way

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def check_targets(self, y: torch.Tensor, examples: int, n_way: int, min_classes: int = 2) -> None:
        """Integer labels 0..n_way-1, one per example, every class present."""
        if y.ndim != 1 or len(y) != examples:
            raise InputError(f"support has {examples} images but {tuple(y.shape)} labels: give one label per image")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise InputError(f"support labels must be integer class indices, got {y.dtype}")
        if n_way < min_classes:
            raise InputError(f"a support set needs at least {min_classes} classes; got n_way={n_way}")
        if len(y) == 0 or int(y.min()) < 0 or int(y.max()) >= n_way:
            raise InputError(f"support labels must lie in 0..{n_way - 1}")
        counts = torch.bincount(y.cpu(), minlength=n_way)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise InputError(f"classes {missing} have no support example; every class 0..{n_way - 1} needs one")

    def query_tensor(self, query: object) -> torch.Tensor | None:
        """Queries are images or model-ready image tensors: the preprocessor's to read (None)."""
        return None


class Regression:
    name: KindName = "regression"
    classifies = False

    def head_outputs(self, n_way: int) -> int:
        return 1

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype))

    def check_targets(self, y: torch.Tensor, examples: int, n_way: int = 1, min_classes: int = 1) -> None:
        """Finite floating-point targets, one per input ([N] or [N, 1])."""
        if y.numel() != examples or not y.is_floating_point() or not all_finite(y):
            raise InputError(f"regression targets must be {examples} finite floating-point values, one per input")

    def query_tensor(self, query: object) -> torch.Tensor:
        """Queries are a non-empty, finite floating-point tensor of inputs."""
        if not isinstance(query, torch.Tensor) or not query.is_floating_point() or len(query) == 0:
            raise InputError("a regression task predicts on a non-empty floating-point tensor of inputs")
        if not all_finite(query):
            raise InputError("query contains NaN or infinite values")
        return query.float()


TaskKind = Classification | Regression
CLASSIFICATION, REGRESSION = Classification(), Regression()
KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (CLASSIFICATION, REGRESSION)}


def task_kind(name: str) -> TaskKind:
    """The kind called ``name`` ("classification" or "regression")."""
    if name not in KINDS:
        raise InputError(f"unknown task kind {name!r}; choose one of {', '.join(map(repr, KINDS))}")
    return KINDS[name]
