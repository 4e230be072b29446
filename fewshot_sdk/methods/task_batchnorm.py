"""Batch norm by each task's statistics, as MAML normalises (Finn et al. 2017, sec. 5.2).

MAML keeps no running averages: every forward normalises by the statistics of the batch at
hand, ``y = (x - mu_B) / sqrt(sigma_B^2 + eps) * gamma + beta``. An adapted task instead keeps
the statistics of its support set under the adapted weights theta' and normalises its queries
by them, so that a prediction never depends on the other queries in the batch. Those support
statistics are a function of theta, so in meta-training they carry part of the meta-gradient:
both autograd functions here exist to give that gradient on batch norm's own fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class TaskBatchNorm(nn.Module):
    """Batch norm with no running averages: by the batch's own mean and (biased) variance, as MAML does,
    or by ``mean``/``var`` when a task's are supplied (through ``functional_call``)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("mean", torch.empty(0), persistent=False)
        self.register_buffer("var", torch.empty(0), persistent=False)
        self.stat_name = ""

    #: Where a call's batch statistics are collected; set only on a per-call shadow copy
    #: (:func:`fewshot_sdk.methods.functional_call.call`), never on the learner's own layer.
    recorder: dict[str, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.mean.numel() == 0:
            recorder = self.recorder
            if recorder is None:
                return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
            mean, var = batch_statistics(x)
            recorder[f"{self.stat_name}.mean"], recorder[f"{self.stat_name}.var"] = mean, var
            return self.normalise(x, mean, var)
        return self.normalise(x, self.mean, self.var)

    def normalise(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and (mean.requires_grad or var.requires_grad)):
            # given statistics as constants (a task's predict): one fused op instead of four elementwise passes
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        # Meta-training: the support statistics are part of the meta-gradient, which F.batch_norm does not
        # give for its running statistics.
        return _GivenStatistics.apply(x, mean, var, self.weight, self.bias, self.eps)


def batch_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of a batch (dims 0, 2, 3, ...), differentiable.

    Two plain reductions rather than ``torch.var_mean``, whose one-pass Welford reduction over
    (N, H, W) is several times slower on CPU; the two agree to within 2e-7 of float64. Written as
    an autograd function, so that its backward keeps only ``x`` (which the normalisation keeps
    anyway) and the mean, where ``(x - mean).square()`` would keep an activation-sized difference
    per layer. Second-order MAML differentiates through it, so its backward is differentiable.
    """
    return _BatchStatistics.apply(x)


class _BatchStatistics(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor) -> tuple[Tensor, Tensor]:
        dims = [0, *range(2, x.ndim)]
        mean = x.mean(dims, keepdim=True)
        return mean.flatten(), (x - mean).square().mean(dims)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor], output: tuple) -> None:
        ctx.save_for_backward(inputs[0], output[0])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_mean: Tensor, grad_var: Tensor) -> Tensor:
        # d mean / dx = 1/n; d var / dx = 2 (x - mean) / n (the mean's own dependence on x sums to zero).
        # An unused output's gradient arrives as zeros (autograd materialises it), never None.
        x, mean = ctx.saved_tensors
        shape = (1, -1) + (1,) * (x.ndim - 2)
        count = x.numel() // x.shape[1]
        centred = x - mean.view(shape)
        return torch.addcmul((grad_mean / count).view(shape), centred, (2 * grad_var / count).view(shape))


class _GivenStatistics(torch.autograd.Function):
    """Batch norm by given statistics, differentiable in them too, on batch norm's own fused kernels.

    The forward is ``F.batch_norm`` in eval mode; the backward is its fused ``native_batch_norm_backward``
    (one pass for the input's gradient, one reduction for the weight's and bias's), from which the
    statistics' gradients follow per channel: with ``y = (x - mean) * invstd * w + b``,
    ``dL/dmean = -w * invstd * sum(g)`` and ``dL/dvar = -w * invstd**2 / 2 * sum(g * (x - mean) * invstd)``.
    The same normalisation as per-channel scale and shift (``addcmul``) cost separate activation-sized
    products in its backward. Meta-training differentiates it once (the inner loop's second order runs
    through the support forward, which normalises by its batch), so its backward is not differentiable.
    """

    @staticmethod
    def forward(x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
        x, mean, var, weight, _, eps = inputs
        ctx.save_for_backward(x, mean, var, weight)
        ctx.eps = eps

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple:
        x, mean, var, weight = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, mean, var, None, None, False, ctx.eps, [ctx.needs_input_grad[0], True, True]
        )
        invstd = torch.rsqrt(var + ctx.eps)
        grad_mean = -weight * invstd * grad_bias
        grad_var = -0.5 * weight * invstd.square() * grad_weight
        return grad_x, grad_mean, grad_var, grad_weight, grad_bias, None


def use_task_batchnorm(module: nn.Module, prefix: str = "") -> nn.Module:
    """Replace every BatchNorm layer under ``module`` by a :class:`TaskBatchNorm` (in place).

    Each layer learns its ``stat_name`` (its path under ``prefix``): the key under which a task
    keeps its support statistics, ``<stat_name>.mean`` / ``.var``, beside theta' in the task state.
    """
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            replacement = TaskBatchNorm(child.num_features, child.eps)
            with torch.no_grad():
                if child.weight is not None:
                    replacement.weight.copy_(child.weight)
                    replacement.bias.copy_(child.bias)
            setattr(module, name, replacement)
        else:
            use_task_batchnorm(child, f"{path}.")
    for name, child in module.named_modules():
        if isinstance(child, TaskBatchNorm):
            child.stat_name = f"{prefix}{name}"
    return module
