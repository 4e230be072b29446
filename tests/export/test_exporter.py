"""task.export_onnx itself: destinations, opsets, refusals, verification, and leaving the caller's learner alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.errors import InputError
from fewshot_sdk.export import onnx as exporter
from fewshot_sdk.export.runtime import OnnxClassifier
from fewshot_sdk.methods.protonet import ProtoNet, ProtoNetConfig
from fewshot_sdk.task.adapted import AdaptedModel


def small_task(learner: fs.Learner | None = None) -> AdaptedModel:
    torch.manual_seed(0)
    learner = learner if learner is not None else fs.create("protonet")
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    return learner.adapt(fs.SupportSet.from_tensors(x, y, ["a", "b", "c"]))


@pytest.fixture(scope="module")
def task():
    return small_task()


def test_existing_file_needs_overwrite_and_is_then_replaced(task, tmp_path):
    path = tmp_path / "task.onnx"
    path.write_bytes(b"old")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        task.export_onnx(path)
    assert path.read_bytes() == b"old"
    assert task.export_onnx(path, overwrite=True) == path
    assert OnnxClassifier(path).class_names == ["a", "b", "c"]
    with pytest.raises(InputError, match=r"must end in \.onnx"):
        task.export_onnx(tmp_path / "task.bin")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        task.export_onnx(tmp_path / "dir.onnx", overwrite=True)


def test_opset_is_honoured_and_checked(task, tmp_path):
    path = task.export_onnx(tmp_path / "deep" / "er" / "task.onnx", opset=18)  # parent folders are created
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    for bad in (5, 10_000, "18"):
        with pytest.raises(InputError, match="opset must be an integer"):
            task.export_onnx(tmp_path / "bad.onnx", opset=bad)


def test_regression_tasks_are_refused(task, tmp_path):
    regression = AdaptedModel(task.learner, task.state, ["value"], task="regression")
    with pytest.raises(InputError, match="only classification tasks export"):
        regression.export_onnx(tmp_path / "r.onnx")


def test_a_graph_that_does_not_reproduce_the_task_is_never_written(task, tmp_path, monkeypatch):
    def broken(module, example, opset):
        proto = exporter._export_dynamo(module, example, opset)
        for node in proto.graph.node:  # turn the head's bias off: probabilities change
            if node.op_type == "Gemm":
                del node.input[2:]
        return proto

    monkeypatch.setattr(exporter, "EXPORTERS", [("broken", broken)])
    with pytest.raises(
        exporter.ExportError, match="protonet task.*broken: probabilities or novelty differ from torch by"
    ):
        task.export_onnx(tmp_path / "t.onnx")
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


class LenBoundProtoNet(ProtoNet):
    """A method whose scoring turns the batch size into a Python int (not registered)."""

    def scores(self, state, features):
        logits, novelty = super().scores(state, features)
        return logits.view(len(features), -1), novelty


def test_a_method_that_bakes_in_the_batch_size_gets_a_clear_error(tmp_path):
    task = small_task(LenBoundProtoNet(ProtoNetConfig(metric="cosine")).eval())
    with pytest.raises(exporter.ExportError, match=r"batch dimension is fixed to 2.*use x\.shape\[0\]"):
        task.export_onnx(tmp_path / "t.onnx")
    assert list(tmp_path.iterdir()) == []


def test_generic_export_path_and_the_callers_learner_is_untouched(tmp_path):
    learner = fs.create("protonet", metric="cosine", temperature=0.5)  # no linear head: the generic wrapper
    task = small_task(learner)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    path = task.export_onnx(tmp_path / "cosine.onnx")
    assert all(p.requires_grad for p in learner.parameters()) and not learner.training
    assert all(torch.equal(before[k], v) for k, v in learner.state_dict().items())
    query = torch.randn(5, 1, 28, 28)
    _, probs = OnnxClassifier(path).run(query.numpy())
    assert np.abs(probs - task.predict(query).probs.numpy()).max() <= 1e-4
