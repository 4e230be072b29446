"""A backbone's inference in onnxruntime: the opt-in engine for embedding many images on a CPU.

``fs.load(model, runtime="onnxruntime")`` freezes the learner with this engine: its inference twin
(:class:`~fewshot_sdk.models.frozen.FrozenBackbone`) traces its batch-norm-folded network once into
an ONNX graph, checked against torch (within 1e-4 of the outputs' scale on batches of other sizes
than the traced one, else :class:`ExportError`), and answers from an onnxruntime session: the
support set's embedding in ``adapt``, the queries' in ``predict``, every image in ``fewshot
evaluate``'s embed-once pass. onnxruntime fuses ReLU6 and the residual additions into the
convolutions and runs them in its blocked NCHWc layout on its own sgemm (MLAS); the figures against
torch are in ``benchmarks/results/photo_speed_cpu.md``.

The twin never changes after it is built, so the session needs no watch on the weights: it answers
the calls whose input it was traced for (CPU float32 batches of one input shape); everything else,
tracing for export included, runs the twin's torch network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fewshot_sdk.export.onnx import TOLERANCE, TRACE_BATCH, ExportError, trace_to_onnx

if TYPE_CHECKING:
    import onnxruntime

INPUT = "images"
OUTPUT = "features"


class OnnxBackbone:
    """An onnxruntime session holding a traced copy of ``body``, and the record of what it was traced from."""

    def __init__(self, body: nn.Module, input_shape: tuple[int, ...], threads: int = 0) -> None:
        """``body``: a frozen network (an inference twin's, never changed after this).

        ``input_shape``: one input's (C, H, W), as preprocessing makes it; ``threads``: intra-op threads (0: all).
        """
        import onnxruntime

        self.input_shape = tuple(input_shape)
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(TRACE_BATCH, *input_shape, generator=generator)
        proto = trace_to_onnx(body, example, None, INPUT, (OUTPUT,))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session: onnxruntime.InferenceSession = onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        checks = [torch.randn(batch, *input_shape, generator=generator) for batch in (1, TRACE_BATCH + 1)]
        with torch.inference_mode():
            for check in checks:
                expected, got = body(check).numpy(), self(check).numpy()
                error = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
                if error > TOLERANCE * max(1.0, float(np.abs(expected).max())):
                    raise ExportError(f"the backbone's onnxruntime graph differs from torch by {error:.2e}")

    def accepts(self, x: torch.Tensor) -> bool:
        """Whether the traced graph takes ``x``: a CPU float32 batch of the traced input shape."""
        return x.device.type == "cpu" and x.dtype == torch.float32 and tuple(x.shape[1:]) == self.input_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: x.detach().contiguous().numpy()})[0])
