"""The torch reference path against direct float64 formulas (the ground truth)."""

from __future__ import annotations

import pytest
import torch

from fewshot_sdk.kernels import pairwise_logits, pairwise_softmax, reference


def direct_scores(q: torch.Tensor, s: torch.Tensor, metric: str, w: torch.Tensor | None) -> torch.Tensor:
    diff = q[:, None, :] - s[None, :, :]
    if metric == "sqeuclidean":
        return -(diff**2).sum(-1)
    if metric == "l1":
        return -(diff.abs() * (w if w is not None else 1.0)).sum(-1)
    return torch.nn.functional.cosine_similarity(q[:, None, :], s[None, :, :], dim=-1)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "l1"])
@pytest.mark.parametrize(("m", "n", "d"), [(1, 1, 1), (7, 33, 75), (75, 5, 1600), (33, 7, 3)])
def test_reference_matches_direct_formula(
    metric: str, m: int, n: int, d: int, gen: torch.Generator, assert_close
) -> None:
    q = torch.randn(m, d, generator=gen, dtype=torch.float64)
    s = torch.randn(n, d, generator=gen, dtype=torch.float64)
    v = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    w = torch.rand(d, generator=gen, dtype=torch.float64) if metric == "l1" else None
    logits = direct_scores(q, s, metric, w) / 2.5
    got = pairwise_logits(q, s, metric, temperature=2.5, weights=w, backend="torch")
    assert_close(got, logits, rtol=1e-10)
    probs = torch.softmax(logits, -1)
    assert_close(pairwise_softmax(q, s, metric, temperature=2.5, weights=w, backend="torch"), probs, rtol=1e-10)
    out = pairwise_softmax(q, s, metric, values=v, temperature=2.5, weights=w, backend="torch")
    assert_close(out, probs @ v, rtol=1e-10)


def test_reference_l1_chunks_rows(monkeypatch: pytest.MonkeyPatch, gen: torch.Generator) -> None:
    """Row chunking of the L1 difference tensor must not change the result."""
    q = torch.randn(37, 9, generator=gen, dtype=torch.float64)
    s = torch.randn(11, 9, generator=gen, dtype=torch.float64)
    full = reference.pairwise_scores(q, s, "l1")
    monkeypatch.setattr(reference, "_L1_CHUNK_ELEMS", 5 * 11 * 9)
    assert torch.allclose(reference.pairwise_scores(q, s, "l1"), full)


@pytest.mark.parametrize("weights", ["none", "positive", "signed"])
def test_reference_l1_inference_and_training_paths_agree(weights: str, gen: torch.Generator) -> None:
    """cdist (no grad) and the explicit difference (grad tracked) give the same scores."""
    q = torch.randn(9, 13, generator=gen, dtype=torch.float64)
    s = torch.randn(4, 13, generator=gen, dtype=torch.float64)
    w = {"none": None, "positive": torch.rand(13, generator=gen, dtype=torch.float64) + 0.1,
         "signed": torch.randn(13, generator=gen, dtype=torch.float64)}[weights]  # fmt: skip
    with torch.no_grad():
        fast = reference.pairwise_scores(q, s, "l1", w)
    tracked = reference.pairwise_scores(q.requires_grad_(), s, "l1", w)
    assert tracked.requires_grad
    assert torch.allclose(fast, tracked.detach(), rtol=1e-12, atol=1e-12)
    assert torch.allclose(fast, direct_scores(q.detach(), s, "l1", w), rtol=1e-12, atol=1e-12)


def test_reference_cosine_zero_vector_is_finite() -> None:
    q = torch.zeros(2, 3, dtype=torch.float64)
    s = torch.ones(4, 3, dtype=torch.float64)
    out = pairwise_softmax(q, s, "cosine", backend="torch")
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.full_like(out, 0.25))


def test_reference_sqeuclidean_self_distance_is_zero(gen: torch.Generator) -> None:
    x = torch.randn(5, 64, generator=gen) * 100  # large norms: the expansion must not go positive
    assert (pairwise_logits(x, x, "sqeuclidean", backend="torch").diagonal() == 0).all()


def test_reference_sgd(gen: torch.Generator) -> None:
    ps = [
        torch.randn(3, 5, generator=gen, dtype=torch.float64),
        torch.randn(7, generator=gen, dtype=torch.float64),
    ]
    gs = [torch.randn_like(p) for p in ps]
    lrs = [torch.tensor(0.3, dtype=torch.float64), torch.rand(7, generator=gen, dtype=torch.float64)]
    new = reference.sgd_step(ps, gs, lrs)
    assert torch.equal(new[0], ps[0] - 0.3 * gs[0])
    assert torch.equal(new[1], ps[1] - lrs[1] * gs[1])
    before = [p.clone() for p in ps]
    reference.sgd_step_(ps, gs, 0.1)
    for b, p, g in zip(before, ps, gs, strict=True):
        assert torch.allclose(p, b - 0.1 * g)
