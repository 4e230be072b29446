"""A frozen learner's backbone inference in onnxruntime (opt-in): in its twin, never in the trainable network."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.export.onnx_backbone import OnnxBackbone
from fewshot_sdk.io.zoo import onnxruntime_engine

SIZE = 64  # small photos: the network is the photo one, the test stays quick


@pytest.fixture(scope="module")
def learners() -> tuple[fs.Learner, fs.Learner]:
    """The same photo ProtoNet twice, frozen: its twin in torch, and its twin's backbone in onnxruntime."""
    torch.manual_seed(0)
    plain = fs.create("protonet", backbone="efficientnet-lite0", image_size=SIZE, resize_shorter=SIZE).eval()
    fast = copy.deepcopy(plain).freeze(onnxruntime_engine(threads=1))
    return plain.freeze(), fast


@pytest.fixture
def graph_calls(monkeypatch) -> list[int]:
    """The batch sizes the onnxruntime graph was run on."""
    calls: list[int] = []
    run = OnnxBackbone.__call__

    def counted(self: OnnxBackbone, x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return run(self, x)

    monkeypatch.setattr(OnnxBackbone, "__call__", counted)
    return calls


def images(n: int, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_adapt_and_predict_embed_in_onnxruntime_and_answer_as_torch_does(learners, graph_calls):
    plain, fast = learners
    support = fs.SupportSet.from_tensors(images(6), torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"])
    queries = images(5, seed=2)
    expected = plain.adapt(support).predict(queries)
    got = fast.adapt(support).predict(queries)
    assert sum(graph_calls) == 6 + 5  # every support image and query once (in the backbone's chunks)
    torch.testing.assert_close(got.probs, expected.probs, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.novelty, expected.novelty, atol=1e-4, rtol=1e-4)


def test_calls_the_graph_does_not_compute_run_torch(learners, graph_calls):
    plain, fast = learners
    twin, reference_twin = fast.inference_learner().backbone, plain.inference_learner().backbone
    x = images(3)
    with torch.inference_mode():
        reference = reference_twin(x)
    # with autograd (and so in a trace, where export records torch's network): torch's own network
    torch.testing.assert_close(twin(x), reference, rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the tracer the fast exporter uses
        traced = torch.jit.trace(twin, x, check_trace=False)
    assert graph_calls == []
    torch.testing.assert_close(traced(x), reference, rtol=1e-5, atol=1e-5)
    # another image size than the traced one
    with torch.inference_mode():
        twin(images(2, size=SIZE + 8))
    # the trainable learner never runs the graph, with autograd or without
    assert fast.backbone(x).requires_grad
    with torch.no_grad():
        fast.backbone(x)
    assert graph_calls == []
    # and an inference call does run the graph, with torch's answer
    with torch.inference_mode():
        torch.testing.assert_close(twin(x), reference, atol=1e-4, rtol=1e-4)
    assert graph_calls == [3]


def test_weights_changed_after_freezing_reach_tasks_only_once_frozen_again(graph_calls):
    torch.manual_seed(0)
    learner = fs.create("protonet", backbone="efficientnet-lite0", image_size=SIZE, resize_shorter=SIZE).eval()
    learner.freeze(onnxruntime_engine(threads=1))
    support = fs.SupportSet.from_tensors(images(4), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    queries = images(3, seed=3)
    before = learner.adapt(support)
    expected = before.predict(queries).probs
    learner.train()  # training drops the twin and its engine
    with torch.no_grad():
        learner.backbone.body[-2][0].weight.mul_(1.5)  # in place, as an optimizer step
    learner.eval().freeze(onnxruntime_engine(threads=1))
    graph_calls.clear()  # the new trace's own check
    after = learner.adapt(support)
    assert graph_calls == [4]  # the new twin's graph embeds the support
    torch.testing.assert_close(before.predict(queries).probs, expected, rtol=0, atol=0)  # an old task never changes
    with torch.no_grad():
        changed = learner.unfreeze().adapt(support).predict(queries).probs  # torch, from the new weights
    torch.testing.assert_close(after.predict(queries).probs, changed, atol=1e-4, rtol=0)


def test_the_whole_network_in_stage_outputs_runs_the_graph_and_a_prefix_runs_torch(learners, graph_calls):
    plain, fast = learners
    twin, reference_twin = fast.inference_learner().backbone, plain.inference_learner().backbone
    stages = len(twin.stages)
    x = images(3)
    torch.testing.assert_close(
        twin.stage_outputs(x, stages), reference_twin.stage_outputs(x, stages), atol=1e-4, rtol=1e-4
    )
    assert graph_calls == [3]
    torch.testing.assert_close(twin.stage_outputs(x, 13), reference_twin.stage_outputs(x, 13))
    assert graph_calls == [3]


def test_a_task_of_an_opted_in_learner_exports_and_the_file_answers_as_predict_does(learners, tmp_path):
    _, fast = learners
    support = fs.SupportSet.from_tensors(images(4), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    task = fast.adapt(support)
    path = task.export_onnx(tmp_path / "t.onnx")  # traced from torch's network (autograd on: no session)
    queries = images(3, seed=4)
    torch.testing.assert_close(
        fs.load_task(path).predict(queries).probs, task.predict(queries).probs, atol=1e-4, rtol=0
    )


def test_load_takes_the_runtime_and_refuses_what_it_cannot_do():
    learner = fs.load("protonet-omniglot", runtime="onnxruntime", threads=1)
    assert isinstance(learner.inference_learner().backbone.engine, OnnxBackbone)
    assert fs.load("protonet-omniglot").inference_learner().backbone.engine is None
    with pytest.raises(fs.InputError, match="unknown runtime 'tensorrt'"):
        fs.load("protonet-omniglot", runtime="tensorrt")
    with pytest.raises(fs.InputError, match="on the CPU"):
        fs.load("protonet-omniglot", device="cuda", runtime="onnxruntime")
