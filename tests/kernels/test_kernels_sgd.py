"""Multi-tensor SGD: in place (one launch) and functional (second-order gradients)."""

from __future__ import annotations

import pytest
import torch

from fewshot_sdk.kernels import sgd_step, sgd_step_, triton_sgd

#: The Triton path runs on CUDA when present, else in the interpreter (tests/conftest.py).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPES = [(1,), (7,), (33, 75), (3, 1, 3, 3), (64, 1, 3, 3), (1600, 5), (75,)]


def make_params(gen: torch.Generator, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.randn(*shape, generator=gen, dtype=dtype).to(DEVICE) for shape in SHAPES]


def per_param_lrs(params: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """Alternate one-element and full-shape learned rates (Meta-SGD uses the latter)."""
    return [
        torch.rand((), generator=gen, dtype=p.dtype).to(DEVICE)
        if i % 2
        else torch.rand(p.shape, generator=gen, dtype=p.dtype).to(DEVICE)
        for i, p in enumerate(params)
    ]


def test_in_place_float_lr(gen: torch.Generator, assert_close) -> None:
    params = make_params(gen)
    grads = [torch.randn(p.shape, generator=gen).to(DEVICE) for p in params]
    want = [p.double() - 0.05 * g.double() for p, g in zip(params, grads, strict=True)]
    ptrs = [p.data_ptr() for p in params]
    versions = [p._version for p in params]
    sgd_step_(params, grads, 0.05, backend="triton")
    assert [p.data_ptr() for p in params] == ptrs  # really in place
    assert all(p._version > v for p, v in zip(params, versions, strict=True))  # autograd sees it
    for p, w in zip(params, want, strict=True):
        assert_close(p, w)


def test_in_place_per_parameter_lr(gen: torch.Generator, assert_close) -> None:
    params = make_params(gen)
    grads = [torch.randn(p.shape, generator=gen).to(DEVICE) for p in params]
    lrs = per_param_lrs(params, gen)
    want = [p.double() - r.double() * g.double() for p, g, r in zip(params, grads, lrs, strict=True)]
    sgd_step_(params, grads, lrs, backend="triton")
    for p, w in zip(params, want, strict=True):
        assert_close(p, w)


def test_in_place_is_one_launch(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """All same-dtype contiguous params go through exactly one kernel launch."""
    launches: list[int] = []
    real = triton_sgd.multi_sgd

    def counting(params, *args, **kwargs):
        launches.append(len(params))
        return real(params, *args, **kwargs)

    from fewshot_sdk.kernels import autograd

    monkeypatch.setattr(autograd, "multi_sgd", counting)
    params = make_params(gen)
    sgd_step_(params, [torch.ones_like(p) for p in params], 0.1, backend="triton")
    assert launches == [len(SHAPES)]


def test_in_place_spans_many_blocks(monkeypatch: pytest.MonkeyPatch, gen: torch.Generator) -> None:
    """Tensors larger than one block are split over programs; ends are masked."""
    monkeypatch.setattr(triton_sgd, "BLOCK", 64)
    params = [
        torch.randn(1000, generator=gen).to(DEVICE),
        torch.randn(3, generator=gen).to(DEVICE),
        torch.randn(129, generator=gen).to(DEVICE),
    ]
    grads = [torch.randn(p.shape, generator=gen).to(DEVICE) for p in params]
    lrs = [
        torch.rand(1000, generator=gen).to(DEVICE),
        torch.rand(1, generator=gen).to(DEVICE),
        torch.rand(129, generator=gen).to(DEVICE),
    ]
    want = [p - r * g for p, g, r in zip(params, grads, lrs, strict=True)]
    sgd_step_(params, grads, lrs, backend="triton")
    for p, w in zip(params, want, strict=True):
        assert torch.allclose(p, w)


def test_in_place_mixed_dtypes_and_non_contiguous(gen: torch.Generator) -> None:
    params = [
        torch.randn(5, 7, generator=gen).to(DEVICE).T,
        torch.randn(9, generator=gen, dtype=torch.float64).to(DEVICE),
        torch.randn(4, generator=gen).to(DEVICE, torch.bfloat16),
    ]
    grads = [torch.ones_like(p) for p in params]
    want = [p.double() - 0.5 for p in params]
    sgd_step_(params, grads, 0.5, backend="triton")
    for p, w in zip(params, want, strict=True):
        assert torch.allclose(p.double(), w, rtol=1e-2)
    assert params[0].stride() == (1, 7)


def test_in_place_does_not_touch_autograd_leaves(gen: torch.Generator) -> None:
    """Updating leaves that require grad (an nn.Module's weights) works like optimizer.step."""
    layer = torch.nn.Linear(7, 3).to(DEVICE)
    before = [p.detach().clone() for p in layer.parameters()]
    sgd_step_(list(layer.parameters()), [torch.ones_like(p) for p in layer.parameters()], 0.25, backend="triton")
    for p, b in zip(layer.parameters(), before, strict=True):
        assert torch.allclose(p.detach(), b - 0.25)
        assert p.requires_grad


@pytest.mark.parametrize("lr_kind", ["float", "tensors"])
def test_functional_forward(lr_kind: str, gen: torch.Generator, assert_close) -> None:
    params = make_params(gen)
    grads = [torch.randn(p.shape, generator=gen).to(DEVICE) for p in params]
    lr = 0.3 if lr_kind == "float" else per_param_lrs(params, gen)
    new = sgd_step(params, grads, lr, backend="triton")
    want = sgd_step([p.double() for p in params], [g.double() for g in grads],
                    lr if lr_kind == "float" else [r.double() for r in lr], backend="torch")  # fmt: skip
    for n, w, p in zip(new, want, params, strict=True):
        assert n.shape == p.shape and n.dtype == p.dtype
        assert_close(n, w)


def _maml_meta_grads(backend: str, dtype: torch.dtype, lr_kind: str, seed: int = 3) -> list[torch.Tensor]:
    """Second-order MAML on a tiny MLP: meta-gradient w.r.t. init weights and learned lrs."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape: int, uniform: bool = False) -> torch.Tensor:
        # Draw in float64 for both runs so the float32 run sees the same numbers.
        t = torch.rand(shape, generator=gen, dtype=torch.float64) if uniform else torch.randn(
            shape, generator=gen, dtype=torch.float64)  # fmt: skip
        return t.to(DEVICE, dtype).requires_grad_()

    params = [draw(6, 5), draw(5), draw(5, 3)]
    lrs = [
        torch.full((), 0.1, dtype=dtype, device=DEVICE, requires_grad=True),
        draw(5, uniform=True),
        draw(5, 3, uniform=True),
    ]
    xs, xq = draw(10, 6).detach(), draw(8, 6).detach()

    def loss(ps: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(x @ ps[0] + ps[1]) @ ps[2]).pow(2).mean()

    fast = params
    for _ in range(2):  # two inner steps: the second differentiates through the first
        grads = torch.autograd.grad(loss(fast, xs), fast, create_graph=True)
        fast = sgd_step(fast, grads, 0.1 if lr_kind == "float" else lrs, backend=backend)
    wrt = params + (lrs if lr_kind == "tensors" else [])
    return list(torch.autograd.grad(loss(fast, xq), wrt))


@pytest.mark.parametrize("lr_kind", ["float", "tensors"])
def test_functional_second_order_gradients(lr_kind: str, assert_close) -> None:
    got = _maml_meta_grads("triton", torch.float32, lr_kind)
    want = _maml_meta_grads("torch", torch.float64, lr_kind)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


def test_functional_gradgradcheck() -> None:
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(3, 4, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    g = torch.randn(3, 4, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    r = torch.rand(1, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    fn = lambda p, g, r: sgd_step([p], [g], [r], backend="triton")[0].pow(2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (p, g, r))
    assert torch.autograd.gradgradcheck(fn, (p, g, r))
