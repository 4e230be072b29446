"""A fixed set of label slots shared by tasks of any size (MANN's label input/output, MetaNet's base learner).

Model-based methods have an output layer over ``max_classes`` units fixed at
training. An n-way task uses n of them: the first n at adaptation time, a random
subset per episode at training time, so that every slot is trained and no slot
means a particular class (Santoro et al. 2016 shuffle labels per episode).
"""

from __future__ import annotations

import torch

from fewshot_sdk.errors import InputError


def check_ways(n_way: int, max_classes: int, method: str) -> None:
    """Refuse a task with more classes than the model has label slots, naming both numbers.

    (What labels may be is checked for every method by ``Learner.adapt_tensors``.)
    """
    if n_way > max_classes:
        raise InputError(
            f"this {method} model was trained with max_classes={max_classes} label slots; a support set with "
            f"{n_way} classes needs more: use at most {max_classes} classes"
        )


def task_slots(n_way: int, device: torch.device) -> torch.Tensor:
    """The slots of an adapted n-way task: 0..n-1."""
    return torch.arange(n_way, device=device)


def shuffled_slots(n_way: int, max_classes: int, device: torch.device) -> torch.Tensor:
    """A training episode's slots: n distinct random slots out of ``max_classes`` (episode class k -> slot[k])."""
    return torch.randperm(max_classes)[:n_way].to(device)
