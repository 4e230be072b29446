"""An exported graph in int8: onnxruntime's static quantization, calibrated on images the task knows.

Static quantization fixes each activation's scale from calibration batches; the task's own
support images are the natural ones (the queries it will see look like them). Weights are
quantized per output channel (``QInt8``), activations per tensor (``QUInt8``), in the QDQ format
onnxruntime's CPU kernels fuse into int8 convolutions and matrix products. The graph is first
pre-processed (shape inference, constant folding) as onnxruntime's tools advise.

A quantized graph is written only if it keeps the float32 graph's answers on the calibration
images: the same top-1 class on at least :data:`MIN_AGREEMENT` of them and probabilities within
:data:`PROB_TOLERANCE`. Otherwise :class:`~fewshot_sdk.export.onnx.ExportError` says by how much.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from fewshot_sdk.export.metadata import INPUT_NAME
from fewshot_sdk.export.onnx import ExportError, VerifiedGraph

#: Share of the calibration images whose top-1 class the int8 graph must keep.
MIN_AGREEMENT = 0.99
#: Largest |probs(int8) - probs(float32)| on a calibration image.
PROB_TOLERANCE = 0.05


def int8_graph(graph: VerifiedGraph, calibration: np.ndarray, batch: int = 8) -> VerifiedGraph:
    """``graph`` statically quantized to int8 on ``calibration`` ([N, C, H, W] float32), checked against it."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ExportError("int8 export needs calibration images: the task's support set")

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = [calibration[i : i + batch] for i in range(0, len(calibration), batch)]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return {INPUT_NAME: self.rest.pop(0)} if self.rest else None

    with tempfile.TemporaryDirectory() as folder:
        float_path, prepared, quantized = (Path(folder) / name for name in ("f.onnx", "p.onnx", "q.onnx"))
        onnx.save_model(graph.proto, float_path)
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
        proto = onnx.load_model(str(quantized))
    providers = ["CPUExecutionProvider"]
    reference = onnxruntime.InferenceSession(graph.proto.SerializeToString(), providers=providers)
    candidate = onnxruntime.InferenceSession(proto.SerializeToString(), providers=providers)
    want = reference.run(["probs"], {INPUT_NAME: calibration})[0]
    got = candidate.run(["probs"], {INPUT_NAME: calibration})[0]
    agreement = float((want.argmax(1) == got.argmax(1)).mean())
    difference = float(np.abs(want - got).max())
    if agreement < MIN_AGREEMENT or difference > PROB_TOLERANCE:
        raise ExportError(
            f"int8 changes this task's answers on its own support images (top-1 agreement {agreement:.1%}, "
            f"probabilities up to {difference:.3f} apart; the limits are {MIN_AGREEMENT:.0%} and {PROB_TOLERANCE}): "
            "export it in float32"
        )
    return VerifiedGraph(proto, graph.exporter)
