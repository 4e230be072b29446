"""Fixtures for the kernels tests (the interpreter switch is set in tests/conftest.py).

Helpers are fixtures rather than an importable module because the suite runs with
``--import-mode=importlib``, which does not put test folders on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

#: Relative-error bound of the float32 Triton path against float64 references.
RTOL = 1e-4


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Norm-wise relative error, the natural measure for a whole output tensor."""
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = expected.norm().clamp_min(1e-30)
    return float((actual - expected).norm() / scale)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded generator, so every test draws the same random inputs on every run."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def assert_close() -> Callable[..., None]:
    """``assert_close(actual, expected, rtol=1e-4, what="")``: norm-wise relative error check."""

    def check(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL, what: str = "") -> None:
        assert actual.shape == expected.shape, f"{what} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        err = rel_err(actual, expected)
        assert err < rtol, f"{what} relative error {err:.3g} >= {rtol:g}"

    return check
