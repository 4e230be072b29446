"""What a derived inference network was built from, so that it stands in for the original only while it is exact.

Two inference engines are built once from a backbone's network and then answer its calls: the
batch-norm-folded copy (:mod:`fewshot_sdk.models.folding`) and the onnxruntime graph
(:mod:`fewshot_sdk.export.onnx_backbone`). Both are right only while the network still holds the
very modules and tensors they were built from, unchanged, in the same train/eval modes, with no
forward hook that a copy would not run.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightsSnapshot:
    """A network's submodules, parameters, buffers, modes and forward hooks, with the tensors' storage and versions.

    The objects are held (so none can be freed and another take its place at the same address). A
    module, parameter or buffer swapped in (``functional_call``, an assignment) or added, a tensor
    written in place (an optimizer step, ``load_state_dict``, batch norm's running statistics in
    training mode), a submodule switched between train and eval, or a forward hook registered no
    longer matches. The member dictionaries are listed once here and read directly on each call: for
    EfficientNet-Lite0 that took 0.07 ms, where collecting ``parameters()`` and ``buffers()`` again
    took 0.43 ms (the onnxruntime graph's batch of one: 5 ms).
    """

    def __init__(self, body: nn.Module) -> None:
        self.body = body
        self.sizes: list[tuple[dict, int]] = []
        self.entries: list[tuple[dict, str, object]] = []
        self.tensors: list[tuple[torch.Tensor, int, int]] = []
        self.modes: list[tuple[nn.Module, bool]] = []
        for module in body.modules():
            self.modes.append((module, module.training))
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                self.sizes.append((hooks, len(hooks)))
            for members in (module._modules, module._parameters, module._buffers):
                self.sizes.append((members, len(members)))
                self.entries += [(members, name, value) for name, value in members.items()]
                self.tensors += [(t, t.data_ptr(), t._version) for t in members.values() if isinstance(t, torch.Tensor)]

    def matches(self, body: nn.Module) -> bool:
        if body is not self.body:
            return False
        for members, size in self.sizes:
            if len(members) != size:
                return False
        for module, training in self.modes:
            if module.training != training:
                return False
        for members, name, value in self.entries:
            if members.get(name) is not value:
                return False
        for tensor, ptr, version in self.tensors:
            if tensor._version != version or tensor.data_ptr() != ptr:
                return False
        return True


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether any module under ``module`` runs a forward (pre-)hook: a copy of the network would not call it."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
