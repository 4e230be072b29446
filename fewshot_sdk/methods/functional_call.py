"""Run a network with given weights: ``f_theta'(x)`` without writing theta' into the network.

The learner holds theta; a task's predictions are ``f_theta'(x)`` with theta' from its inner loop
(MAML eq. 1). ``torch.func.functional_call`` runs a module with a dict of tensors standing in for its
parameters, so theta' stays an ordinary autograd value (second-order MAML differentiates through it)
and the learner is never patched. :func:`call` adds a per-call shadow of the module to swap the
tensors on (concurrent tasks never see each other's weights) and records each
:class:`TaskBatchNorm`'s batch statistics (how a task keeps its support set's).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import functional_call

from fewshot_sdk.methods.task_batchnorm import TaskBatchNorm

#: A network's tensors by name (as in ``state_dict``): theta, or a task's theta' and statistics.
Params = dict[str, Tensor]


def shadow_module(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s tree that shares every tensor but owns its attribute tables.

    ``functional_call`` swaps a module's parameters for the call's tensors and back. On the learner
    that is shared mutable state: a thread reading the weights while another has them swapped gets
    the other task's (a 3-row head for a 5-way task). A per-call shadow leaves the learner untouched,
    with no lock to serialise concurrent predicts, for a few dict copies per module.
    """
    clone = object.__new__(type(module))
    attributes = module.__dict__.copy()
    attributes["_parameters"] = dict(module._parameters)
    attributes["_buffers"] = dict(module._buffers)
    attributes["_modules"] = {name: None if c is None else shadow_module(c) for name, c in module._modules.items()}
    clone.__dict__ = attributes
    return clone


def call(
    module: nn.Module,
    tensors: Params,
    x: Tensor,
    stats: dict[str, Tensor] | None = None,
    shadow: nn.Module | None = None,
) -> Tensor:
    """``module(x)`` with ``tensors`` standing in for its parameters/buffers of the same names.

    With ``stats``, every :class:`TaskBatchNorm` that normalises by its batch writes the batch's mean
    and variance there. ``shadow``: a :func:`shadow_module` of ``module`` to swap the tensors on, for
    callers that make several calls in turn on one thread (an adaptation's steps); else a fresh one.
    """
    shadow = shadow_module(module) if shadow is None else shadow
    recorders = [child for child in shadow.modules() if isinstance(child, TaskBatchNorm)] if stats is not None else []
    for child in recorders:
        child.recorder = stats
    try:
        return functional_call(shadow, tensors, (x,), tie_weights=has_tied_tensors(module))
    finally:
        for child in recorders:
            child.recorder = None


def has_tied_tensors(module: nn.Module) -> bool:
    """Whether one tensor is registered under two names in ``module`` (tied weights), cached on the module.

    ``functional_call`` checks for tied tensors on every call unless told there are none, a cost paid
    at every step of every adaptation; a network's structure is fixed once built.
    """
    tied = module.__dict__.get("_fewshot_tied_tensors")
    if tied is None:
        named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
        tied = len({id(tensor) for _, tensor in named}) < len(named)
        module.__dict__["_fewshot_tied_tensors"] = tied
    return tied
