"""The TorchScript fast path of task.export_onnx: taken only by a trace the tracer does not warn about."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.export import onnx as exporter
from fewshot_sdk.export.metadata import OnnxMetadata
from fewshot_sdk.export.runtime import OnnxClassifier
from fewshot_sdk.methods.protonet import ProtoNet, ProtoNetConfig


def small_task(learner: fs.Learner) -> fs.AdaptedModel:
    torch.manual_seed(0)
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    return learner.adapt(fs.SupportSet.from_tensors(x, y, ["a", "b", "c"]))


def written_by(path) -> str:
    model = onnx.load(str(path))
    return OnnxMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path)).exporter


class ShapeBranchProtoNet(ProtoNet):
    """An embedding with a Python branch on the batch size: the tracer warns, torch.export knows it is never taken."""

    def embed(self, x):
        if x.shape[0] == 0:
            return x.new_zeros(0, self.backbone.out_features)
        return super().embed(x)


def test_a_clean_trace_is_written_by_the_tracer_silently_with_a_dynamic_batch(tmp_path):
    task = small_task(fs.create("protonet"))
    phases: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = task.export_onnx(tmp_path / "t.onnx", phases=phases)
    assert [str(w.message) for w in caught] == []
    assert written_by(path) == "torchscript"
    assert {"prepare", "exporter (torchscript)", "onnx.checker", "onnxruntime session", "parity runs"} <= set(phases)
    assert "exporter (torch.export)" not in phases and "metadata and writing" in phases
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    runner = OnnxClassifier(path, providers=["CPUExecutionProvider"])
    for batch in (1, 5, 64):
        query = torch.randn(batch, 1, 28, 28)
        expected = task.predict(query)
        logits, probs, novelty = runner.outputs(query.numpy())
        assert logits.shape == probs.shape == (batch, 3) and novelty.shape == (batch,)
        assert np.abs(probs - expected.probs.numpy()).max() <= 1e-4


def test_a_trace_the_tracer_warns_about_falls_back_to_torch_export(tmp_path):
    task = small_task(ShapeBranchProtoNet(ProtoNetConfig()).eval())
    phases: dict[str, float] = {}
    path = task.export_onnx(tmp_path / "t.onnx", phases=phases)
    assert written_by(path) == "torch.export"
    assert "exporter (torchscript)" in phases and "exporter (torch.export)" in phases
    query = torch.randn(3, 1, 28, 28)
    _, probs = OnnxClassifier(path).run(query.numpy())
    assert np.abs(probs - task.predict(query).probs.numpy()).max() <= 1e-4
    assert written_by(small_task(fs.create("protonet")).export_onnx(tmp_path / "after.onnx")) == "torchscript"


def test_the_tracer_is_tried_first_and_its_refusal_is_reported_when_nothing_works(tmp_path, monkeypatch):
    def refused(module, example, opset):
        raise RuntimeError("no graph today")

    monkeypatch.setattr(exporter, "EXPORTERS", [("torchscript", exporter.trace_to_onnx), ("other", refused)])
    task = small_task(ShapeBranchProtoNet(ProtoNetConfig()).eval())
    with pytest.raises(exporter.ExportError, match=r"torchscript: TracerWarning: .*; other: RuntimeError: no graph"):
        task.export_onnx(tmp_path / "t.onnx")
    assert list(tmp_path.iterdir()) == []


def assert_matches_predict(task: fs.AdaptedModel, path, shape: tuple[int, ...]) -> None:
    runner = OnnxClassifier(path, providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        query = torch.randn(batch, *shape)
        _, probs = runner.run(query.numpy())
        assert np.abs(probs - task.predict(query).probs.numpy()).max() <= 1e-4


@pytest.mark.parametrize("signs", ["positive", "mixed"])
def test_weighted_l1_traces_without_its_value_dependent_cdist_branch(tmp_path, signs):
    """Siamese's weighted L1 takes cdist in eager inference only when every weight is positive; a trace
    must not keep that branch (or the sizes check), whatever the weights it saw."""
    learner = fs.create("siamese")
    if signs == "mixed":
        with torch.no_grad():
            learner.distance_weights[::2].neg_()
    task = small_task(learner)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = task.export_onnx(tmp_path / "t.onnx")
    assert [str(w.message) for w in caught] == [] and written_by(path) == "torchscript"
    assert_matches_predict(task, path, (1, 28, 28))


@pytest.mark.parametrize("size", [66, 67])
def test_photo_backbone_traces_with_the_padding_planned_for_its_input_size(tmp_path, size):
    """TensorFlow SAME padding depends on each layer's input size (even or odd, here both at some layer):
    the network plans it for the preprocessing size, so the trace reads no size and matches eager."""
    torch.manual_seed(0)
    photos = {"backbone": "efficientnet-lite0", "image_size": size, "resize_shorter": size}
    learner = fs.create("protonet", metric="cosine", **photos)
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 0, 1])
    task = learner.adapt(fs.SupportSet.from_tensors(x, y, ["a", "b"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = task.export_onnx(tmp_path / "t.onnx")
    assert [str(w.message) for w in caught] == [] and written_by(path) == "torchscript"
    assert_matches_predict(task, path, (3, size, size))
