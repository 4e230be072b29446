"""How a task state is laid out by class, so classes can be added to or removed from an adapted task.

A method whose task state is made of per-class pieces says, for each state tensor, which
axis is the class axis:

- ``"class_rows"``: one row per class (ProtoNet's prototypes, Relation's class feature maps);
- ``"example_rows"``: one row per support example (Matching's and Siamese's stored embeddings);
- ``"one_hot"``: one row per support example, one column per class (their example classes).

Adding classes is then adapting on the new support set alone and concatenating the
pieces, which is what adapting on the union would have computed, since no piece depends
on another class's examples. A method whose state depends on the whole support set
(Full Context Embeddings, MAML-family weights, memories written in sequence) has no layout.
"""

from __future__ import annotations

from typing import Literal

import torch

from fewshot_sdk.errors import InputError

Axis = Literal["class_rows", "example_rows", "one_hot"]
Layout = dict[str, Axis]


def merge(layout: Layout, old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state of old's classes followed by new's (new's classes numbered after old's)."""
    missing = set(layout) ^ set(old) | set(layout) ^ set(new)
    if missing:
        raise InputError(f"the task states do not have the layout's tensors: {sorted(missing)}")
    merged = {}
    for name, axis in layout.items():
        a, b = old[name], new[name].to(old[name])
        if axis == "one_hot":  # [N_old, C_old] and [N_new, C_new] -> [N_old + N_new, C_old + C_new]
            a = torch.cat([a, a.new_zeros(len(a), b.shape[1])], dim=1)
            b = torch.cat([b.new_zeros(len(b), old[name].shape[1]), b], dim=1)
        merged[name] = torch.cat([a, b])
    return merged


def select(layout: Layout, state: dict[str, torch.Tensor], keep: list[int]) -> dict[str, torch.Tensor]:
    """The state of the classes ``keep`` only, in that order."""
    one_hot = next((state[n] for n, axis in layout.items() if axis == "one_hot"), None)
    examples = None if one_hot is None else one_hot[:, keep].sum(1) > 0.5
    chosen = {}
    for name, axis in layout.items():
        tensor = state[name]
        if axis == "class_rows":
            chosen[name] = tensor[keep]
        elif axis == "example_rows":
            chosen[name] = tensor[examples]
        else:
            chosen[name] = tensor[examples][:, keep]
    return chosen
