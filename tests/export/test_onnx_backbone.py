"""A backbone's inference in onnxruntime (opt-in): used exactly where it computes what torch would."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

import fewshot_sdk as fs
from fewshot_sdk.export.onnx_backbone import OnnxBackbone

SIZE = 64  # small photos: the network is the photo one, the test stays quick


@pytest.fixture(scope="module")
def learners() -> tuple[fs.Learner, fs.Learner]:
    """The same photo ProtoNet twice: in torch, and with its backbone opted in to onnxruntime."""
    torch.manual_seed(0)
    plain = fs.create("protonet", backbone="efficientnet-lite0", image_size=SIZE, resize_shorter=SIZE).eval()
    fast = copy.deepcopy(plain)
    fast.backbone.run_in_onnxruntime(threads=1)
    return plain, fast


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
    x = images(3)
    with torch.no_grad():
        reference = plain.backbone(x)
    # autograd: a gradient must flow through torch's network
    features = fast.backbone(x)
    assert features.requires_grad and graph_calls == []
    # another image size than the traced one
    with torch.no_grad():
        fast.backbone(images(2, size=SIZE + 8))
    assert graph_calls == []
    # weights swapped in (MAML-style functional_call), even without autograd
    doubled = {name: 2 * p for name, p in fast.backbone.named_parameters()}
    with torch.no_grad():
        swapped = functional_call(fast.backbone, doubled, (x,))
        torch.testing.assert_close(swapped, functional_call(plain.backbone, doubled, (x,)))
    assert graph_calls == []
    # and the plain inference call does run the graph, with torch's answer
    with torch.no_grad():
        torch.testing.assert_close(fast.backbone(x), reference, atol=1e-4, rtol=1e-4)
    assert graph_calls == [3]


def test_training_and_weights_changed_after_the_trace_run_torch_until_traced_again(graph_calls):
    torch.manual_seed(0)
    learner = fs.create("protonet", backbone="efficientnet-lite0", image_size=SIZE, resize_shorter=SIZE).eval()
    learner.backbone.run_in_onnxruntime(threads=1)
    graph_calls.clear()  # the trace's own check
    x = images(2)
    learner.backbone.train()  # batch statistics, and running statistics updated in place
    with torch.no_grad():
        learner.backbone(x)
    learner.backbone.eval()
    head = learner.backbone.body[-2][0].weight  # the last 1x1 convolution
    with torch.no_grad():
        head.mul_(1.5)  # in place, as an optimizer step
        changed = learner.backbone(x)
        torch.testing.assert_close(changed, copy.deepcopy(learner).backbone(x))  # a copy runs torch
    assert graph_calls == []
    learner.backbone.run_in_onnxruntime(threads=1)
    graph_calls.clear()
    with torch.no_grad():
        torch.testing.assert_close(learner.backbone(x), changed, atol=1e-4, rtol=1e-4)
    assert graph_calls == [2]


def test_the_whole_network_in_stage_outputs_runs_the_graph_and_a_prefix_runs_torch(learners, graph_calls):
    plain, fast = learners
    stages = len(fast.backbone.stages)
    x = images(3)
    torch.testing.assert_close(
        fast.backbone.stage_outputs(x, stages), plain.backbone.stage_outputs(x, stages), atol=1e-4, rtol=1e-4
    )
    assert graph_calls == [3]
    torch.testing.assert_close(fast.backbone.stage_outputs(x, 13), plain.backbone.stage_outputs(x, 13))
    assert graph_calls == [3]


def test_a_copy_runs_torch_and_a_task_of_an_opted_in_learner_exports(learners, graph_calls, tmp_path):
    _, fast = learners
    assert copy.deepcopy(fast).backbone.inference_engine is None
    support = fs.SupportSet.from_tensors(images(4), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    task = fast.adapt(support)
    assert task.export_onnx(tmp_path / "t.onnx").is_file()


def test_load_takes_the_runtime_and_refuses_what_it_cannot_do():
    learner = fs.load("protonet-omniglot", runtime="onnxruntime", threads=1)
    assert isinstance(learner.backbone.inference_engine, OnnxBackbone)
    assert fs.load("protonet-omniglot").backbone.inference_engine is None
    with pytest.raises(fs.InputError, match="unknown runtime 'tensorrt'"):
        fs.load("protonet-omniglot", runtime="tensorrt")
    with pytest.raises(fs.InputError, match="on the CPU"):
        fs.load("protonet-omniglot", device="cuda", runtime="onnxruntime")
