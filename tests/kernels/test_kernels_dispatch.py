"""Backend selection and argument validation of the public functions."""

from __future__ import annotations

import pytest
import torch

from fewshot_sdk import kernels
from fewshot_sdk.kernels import dispatch, pairwise_logits, pairwise_softmax, sgd_step, sgd_step_


def test_public_exports() -> None:
    assert set(kernels.__all__) == {"pairwise_softmax", "pairwise_logits", "sgd_step_", "sgd_step"}


def test_auto_uses_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("Triton path used for CPU tensors with backend='auto'")

    monkeypatch.setattr(dispatch._tri, "pairwise", boom)
    monkeypatch.setattr(dispatch._tri, "launch_sgd", boom)
    q = torch.randn(3, 4)
    pairwise_softmax(q, q, "cosine")
    p = [torch.zeros(3)]
    sgd_step_(p, [torch.ones(3)], 1.0)
    assert torch.equal(p[0], -torch.ones(3))


def test_resolution_rules() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dispatch._use_triton("torch", cuda) is False
    assert dispatch._use_triton("auto", cpu) is False
    assert dispatch._use_triton("auto", cuda) is True
    assert dispatch._use_triton("triton", cuda) is True


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch._tp, "INTERPRET", False)
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        pairwise_softmax(q, q, backend="triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        sgd_step([q], [q], 0.1, backend="triton")


Q, S = torch.randn(4, 6), torch.randn(5, 6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"metric": "euclid"}, "metric"),
        ({"backend": "cuda"}, "backend"),
        ({"s": torch.randn(5, 7)}, "s"),
        ({"q": torch.randn(4)}, "q"),
        ({"s": torch.randn(2, 5, 6)}, "s"),
        ({"q": torch.ones(4, 6, dtype=torch.int64)}, "q"),
        ({"metric": "l1", "weights": torch.ones(5)}, "weights"),
        ({"metric": "l1", "weights": torch.ones(6, 1)}, "weights"),
        ({"metric": "cosine", "weights": torch.ones(6)}, "weights"),
        ({"values": torch.randn(4, 3)}, "values"),
        ({"values": torch.randn(5)}, "values"),
        ({"values": torch.randn(5, 3, dtype=torch.float64)}, "values"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": torch.tensor(1.0)}, "temperature"),
    ],
)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_pairwise_bad_arguments(kwargs: dict, name: str, backend: str) -> None:
    args = {"q": Q, "s": S, "metric": "sqeuclidean", "backend": backend} | kwargs
    with pytest.raises(ValueError, match=name):
        pairwise_softmax(**args)
    if "values" not in kwargs:
        with pytest.raises(ValueError, match=name):
            pairwise_logits(**args)


@pytest.mark.parametrize(
    ("params", "grads", "lr", "name"),
    [
        ([torch.ones(3)], [torch.ones(4)], 0.1, "grads"),
        ([torch.ones(3)], [], 0.1, "grads"),
        ([torch.ones(3)], [torch.ones(3)], [torch.ones(2)], "lr"),
        ([torch.ones(3)], [torch.ones(3)], [], "lr"),
        ([torch.ones(3)], [torch.ones(3)], torch.tensor(0.1), "lr"),
        ([torch.ones(3, dtype=torch.int32)], [torch.ones(3)], 0.1, "params"),
        ([torch.ones(3)], [torch.ones(3)], 0.1, "backend"),
    ],
)
@pytest.mark.parametrize("fn", [sgd_step, sgd_step_])
def test_sgd_bad_arguments(params, grads, lr, name: str, fn) -> None:
    backend = "nope" if name == "backend" else "triton"
    with pytest.raises(ValueError, match=name):
        fn(params, grads, lr, backend=backend)


def test_empty_inputs() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert sgd_step([], [], 0.1, backend="triton") == []
    sgd_step_([], [], 0.1, backend="triton")
    sgd_step_([torch.ones(0, device=device)], [torch.ones(0, device=device)], 0.1, backend="triton")
    out = pairwise_softmax(torch.randn(0, 4, device=device), torch.randn(3, 4, device=device), backend="triton")
    assert out.shape == (0, 3)
