"""Triton pairwise kernels (interpreter on CPU) against float64 torch references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewshot_sdk.kernels import pairwise_logits, pairwise_softmax

#: The Triton path runs on CUDA when present, else in the interpreter (tests/conftest.py).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
METRICS = ["sqeuclidean", "cosine", "l1"]
# Odd sizes: single tiles, several M blocks, several N tiles (online softmax), D not a
# multiple of the D block, and the degenerate 1x1x1.
SIZES = [(1, 1, 1), (7, 33, 75), (75, 5, 1600), (1600, 7, 33), (33, 1600, 7), (75, 300, 64)]


def make(m: int, n: int, d: int, v: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    # Features scaled like normalised embeddings so logits are O(1..10): softmax stays
    # informative instead of collapsing to one-hot.
    q = torch.randn(m, d, generator=gen) / d**0.5
    s = torch.randn(n, d, generator=gen) / d**0.5
    values = torch.randn(n, v, generator=gen)
    weights = torch.rand(d, generator=gen) + 0.5
    return tuple(t.to(DEVICE) for t in (q, s, values, weights))


def f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().double()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("m", "n", "d"), SIZES)
def test_forward_matches_float64(metric: str, m: int, n: int, d: int, gen: torch.Generator, assert_close) -> None:
    q, s, values, weights = make(m, n, d, 5, gen)
    w = weights if metric == "l1" else None
    t = 0.37
    ref_logits = pairwise_logits(f64(q), f64(s), metric, t, f64(w), backend="torch")
    got = pairwise_logits(q, s, metric, t, w, backend="triton")
    assert got.shape == (m, n) and got.dtype == torch.float32
    assert_close(got, ref_logits)
    probs = pairwise_softmax(q, s, metric, temperature=t, weights=w, backend="triton")
    assert_close(probs, torch.softmax(ref_logits, -1))
    out = pairwise_softmax(q, s, metric, values=values, temperature=t, weights=w, backend="triton")
    assert out.shape == (m, 5)
    assert_close(out, torch.softmax(ref_logits, -1) @ f64(values))


@pytest.mark.parametrize("metric", METRICS)
def test_values_wider_than_one_block(metric: str, gen: torch.Generator, assert_close) -> None:
    """V > BLOCK_V splits the value columns over a second grid axis."""
    q, s, values, weights = make(9, 40, 20, 300, gen)
    w = weights if metric == "l1" else None
    ref = pairwise_softmax(f64(q), f64(s), metric, f64(values), 2.0, f64(w), backend="torch")
    assert_close(pairwise_softmax(q, s, metric, values, 2.0, w, backend="triton"), ref)


def test_non_contiguous_inputs(gen: torch.Generator, assert_close) -> None:
    q = torch.randn(40, 12, generator=gen).to(DEVICE).T  # [12, 40], column-major
    s = torch.randn(40, 9, generator=gen).to(DEVICE).T
    values = torch.randn(3, 9, generator=gen).to(DEVICE).T
    ref = pairwise_softmax(f64(q), f64(s), "sqeuclidean", f64(values), 3.0, backend="torch")
    assert_close(pairwise_softmax(q, s, "sqeuclidean", values, 3.0, backend="triton"), ref)


def test_float64_through_triton(gen: torch.Generator, assert_close) -> None:
    q, s, values, _ = (t.double() for t in make(7, 33, 75, 4, gen))
    ref = pairwise_softmax(q, s, "cosine", values, 0.1, backend="torch")
    assert_close(pairwise_softmax(q, s, "cosine", values, 0.1, backend="triton"), ref, rtol=1e-12)


def _grads(fn, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    cot = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
    return list(torch.autograd.grad(out, leaves, cot))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", ["logits", "softmax", "values"])
@pytest.mark.parametrize(("m", "n", "d"), [(7, 33, 75), (75, 5, 1600)])
def test_gradients_match_autograd(
    metric: str, kind: str, m: int, n: int, d: int, gen: torch.Generator, assert_close
) -> None:
    q, s, values, weights = make(m, n, d, 6, gen)
    w = weights if metric == "l1" else None

    def run(backend: str):
        def fn(q, s, values, w=None):
            if kind == "logits":
                return pairwise_logits(q, s, metric, 0.5, w, backend=backend) + 0 * values.sum()
            vals = values if kind == "values" else None
            out = pairwise_softmax(q, s, metric, vals, 0.5, w, backend=backend)
            return out if kind == "values" else out + 0 * values.sum()

        return fn

    inputs = [q, s, values] + ([w] if w is not None else [])
    got = _grads(run("triton"), inputs)
    want = _grads(run("torch"), [t.double() for t in inputs])
    for name, g, r in zip(["q", "s", "values", "weights"], got, want, strict=False):
        assert_close(g, r, what=name)


def test_double_backward(gen: torch.Generator, assert_close) -> None:
    """Gradient of a gradient (second-order meta-learning through the metric head)."""
    q, s, values, weights = make(5, 8, 16, 3, gen)

    def second_order(backend: str, dtype: torch.dtype) -> list[torch.Tensor]:
        qq, ss, ww = (t.detach().to(dtype).requires_grad_() for t in (q, s, weights))
        out = pairwise_softmax(qq, ss, "l1", values.to(dtype), 0.8, ww, backend=backend)
        (gq,) = torch.autograd.grad(out.pow(2).sum(), qq, create_graph=True)
        return list(torch.autograd.grad(gq.pow(2).sum(), [qq, ss, ww]))

    for g, r in zip(second_order("triton", torch.float32), second_order("torch", torch.float64), strict=True):
        assert_close(g, r)


@pytest.mark.parametrize("create_graph", [False, True])
def test_same_tensor_as_queries_and_supports(create_graph: bool, gen: torch.Generator, assert_close) -> None:
    """pairwise(x, x): the q and s gradients must add up, not be counted twice."""
    x = make(6, 6, 10, 1, gen)[0]

    def grad_of(backend: str, dtype: torch.dtype) -> torch.Tensor:
        xx = x.detach().to(dtype).requires_grad_()
        out = pairwise_softmax(xx, xx, "sqeuclidean", temperature=0.3, backend=backend)
        (g,) = torch.autograd.grad((out * out.detach().roll(1, 1)).sum(), xx, create_graph=create_graph)
        return g

    assert_close(grad_of("triton", torch.float32), grad_of("torch", torch.float64))


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(3, 5, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    s = torch.randn(4, 5, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    v = torch.randn(4, 2, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    fn = lambda q, s, v: pairwise_softmax(q, s, "cosine", v, 0.7, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, s, v))


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    m=st.integers(1, 70),
    n=st.integers(1, 150),
    d=st.integers(1, 70),
    v=st.integers(1, 20),
    metric=st.sampled_from(METRICS),
    temperature=st.floats(0.05, 20.0),
    seed=st.integers(0, 2**16),
)
def test_random_sizes_property(
    m: int, n: int, d: int, v: int, metric: str, temperature: float, seed: int, assert_close
) -> None:
    """Any sizes (not only the hand-picked ones) agree with the float64 reference."""
    q, s, values, weights = make(m, n, d, v, torch.Generator().manual_seed(seed))
    w = weights if metric == "l1" else None
    ref = pairwise_softmax(f64(q), f64(s), metric, f64(values), temperature, f64(w), backend="torch")
    assert_close(pairwise_softmax(q, s, metric, values, temperature, w, backend="triton"), ref)
