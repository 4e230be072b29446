"""A backbone's inference in onnxruntime: the opt-in engine for embedding many images on a CPU.

``fs.load(model, runtime="onnxruntime")`` (or ``learner.backbone.run_in_onnxruntime()``) traces
the backbone's network once into an ONNX graph and answers its inference calls from an
onnxruntime session: the embedding of the support set in ``adapt``, of the queries in
``predict``, and of every image in ``fewshot evaluate``'s embed-once pass
(``Backbone.stage_outputs``). On one core, EfficientNet-Lite0 at 192x192 embeds 1.3-1.5x faster
there than in torch eager with batch norm folded, as the SDK runs it (2-3x faster than unfolded;
``benchmarks/results/photo_speed_cpu.md``): onnxruntime fuses ReLU6 and the residual additions
into the convolutions too and runs them in its blocked NCHWc layout on its own sgemm (MLAS).

The session stands in for the torch network only where the two compute the same function:
outside autograd, export, tracing and compilation, in eval mode, on CPU float32 batches of the
traced image size, and while the network still holds the very tensors it was traced with,
unchanged (the same objects, storage and version counters), in the same train/eval modes and with
no forward hook added (:class:`~fewshot_sdk.models.snapshot.WeightsSnapshot`). Everything else runs in torch:
training, a MAML-style ``functional_call`` with adapted weights, a learner moved to CUDA,
weights loaded or stepped after the trace (``run_in_onnxruntime`` again traces the new ones).
The check costs 0.07 ms per call for the photo network, against 5 ms for embedding one photo.
A copy of the learner (``copy.deepcopy``, as export makes) runs torch until it opts in itself.

The graph is checked before it is used: its outputs on batches of other sizes than the traced
one must match torch's within 1e-4 of their scale, else :class:`ExportError`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fewshot_sdk.export.onnx import TRACE_BATCH, ExportError, trace_to_onnx
from fewshot_sdk.models.snapshot import WeightsSnapshot

if TYPE_CHECKING:
    import onnxruntime

INPUT = "images"
OUTPUT = "features"
TOLERANCE = 1e-4


class OnnxBackbone:
    """An onnxruntime session holding a traced copy of ``body``, and the record of what it was traced from."""

    def __init__(self, body: nn.Module, input_shape: tuple[int, ...], threads: int = 0) -> None:
        """``input_shape``: one input's (C, H, W), as preprocessing makes it; ``threads``: intra-op threads (0: all)."""
        import onnxruntime

        self.input_shape = tuple(input_shape)
        self._traced_from = WeightsSnapshot(body)  # before the copy, so any later change to body shows
        network = copy.deepcopy(body).eval().requires_grad_(False)  # never switch the caller's mode
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(TRACE_BATCH, *input_shape, generator=generator)
        proto = trace_to_onnx(network, example, None, INPUT, (OUTPUT,))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session: onnxruntime.InferenceSession = onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        checks = [torch.randn(batch, *input_shape, generator=generator) for batch in (1, TRACE_BATCH + 1)]
        with torch.inference_mode():
            for check in checks:
                expected, got = network(check).numpy(), self(check).numpy()
                error = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
                if error > TOLERANCE * max(1.0, float(np.abs(expected).max())):
                    raise ExportError(f"the backbone's onnxruntime graph differs from torch by {error:.2e}")

    def serves(self, body: nn.Module, x: torch.Tensor) -> bool:
        """Whether this call of ``body`` on ``x`` computes exactly what the traced graph does (module docstring)."""
        if torch.is_grad_enabled() or body.training or x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        if tuple(x.shape[1:]) != self.input_shape or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False
        return self._traced_from.matches(body)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: x.detach().contiguous().numpy()})[0])

    def __deepcopy__(self, memo: dict) -> None:
        """A copied network holds other tensors than the traced ones: the copy runs torch (no engine)."""
        return None
