"""Fused kernels for few-shot learning: pairwise metric softmax and multi-tensor SGD.

SDK methods call only these four functions; ``backend="auto"`` picks Triton on CUDA
and the plain-torch reference elsewhere (see :mod:`fewshot_sdk.kernels.dispatch`).
"""

from .dispatch import pairwise_logits, pairwise_softmax, sgd_step, sgd_step_

__all__ = ["pairwise_logits", "pairwise_softmax", "sgd_step", "sgd_step_"]
