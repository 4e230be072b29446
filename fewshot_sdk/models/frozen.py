"""A backbone's inference twin: built once from the trainable backbone, never changed afterwards.

Training needs batch norm as a layer and autograd; inference (``adapt`` embedding a support set,
``predict`` embedding queries) runs faster with batch norm folded into the convolution before it
(:mod:`fewshot_sdk.models.folding`), in chunks that keep the allocator's memory warm, and, where
asked, in onnxruntime. Kept on the trainable module, those speed-ups needed a guess, call by call,
whether a cached copy was still the network's; the twin is made once, explicitly (``Learner.freeze``,
or for one ``adapt``), so a later training step changes the learner, never the twin or its tasks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from fewshot_sdk.models.backbones import Backbone
from fewshot_sdk.models.folding import folded_copy
from fewshot_sdk.progress import report

#: Makes an inference engine for a network and one input's shape: a callable batch -> output that
#: may refuse a batch (``accepts``). ``fs.load(..., runtime="onnxruntime")`` passes onnxruntime's.
EngineFactory = Callable[[nn.Module, tuple[int, ...]], "Engine"]


class Engine(Protocol):
    """What an inference engine offers the twin (the onnxruntime session in :mod:`fewshot_sdk.export.onnx_backbone`)."""

    def accepts(self, x: torch.Tensor) -> bool: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class FrozenBackbone(Backbone):
    """The inference twin of a :class:`Backbone`: eval mode, no autograd, batch norm folded where exact.

    Calls run in chunks of ``inference_chunk`` inputs; with an engine, those without autograd that it
    accepts run there, while traces for export (and autograd) run the folded torch network.
    """

    def __init__(self, backbone: Backbone, engine: EngineFactory | None = None) -> None:
        nn.Module.__init__(self)  # no probe forward: the sizes are the trainable backbone's
        body = folded_copy(backbone.body) if backbone.fold_batchnorm else copy.deepcopy(backbone.body)
        self.body = body.eval().requires_grad_(False)
        self.flatten = backbone.flatten
        self.input_shape = backbone.input_shape
        self.out_shape = backbone.out_shape
        self.out_features = backbone.out_features
        self.inference_chunk = backbone.inference_chunk
        self.fold_batchnorm = backbone.fold_batchnorm
        self.side_levels = backbone.side_levels
        self.engine = engine(self.body, self.input_shape) if engine is not None else None
        self.eval()

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Stays in eval mode: a twin only infers (training a learner trains its own backbone)."""
        return super().train(False)

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        engine = self.engine
        whole = start == 0 and stop == len(self.stages)
        if whole and engine is not None and not torch.is_grad_enabled() and not is_tracing() and engine.accepts(x):
            return engine(x)
        return super().run_stages(x, start, stop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tracing first: len(x) would freeze the exported graph's batch size
        if is_tracing() or len(x) <= self.inference_chunk:
            return super().forward(x)
        outputs = []
        for start in range(0, len(x), self.inference_chunk):
            outputs.append(super().forward(x[start : start + self.inference_chunk]))
            report(min(start + self.inference_chunk, len(x)), len(x))
        return torch.cat(outputs)


def is_tracing() -> bool:
    """Whether torch is recording a graph (an export's trace or ``torch.export``), which must see torch's network."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.compiler.is_compiling()
