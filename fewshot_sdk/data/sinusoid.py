"""MAML's sinusoid regression tasks (Finn et al. 2017, sec. 5.1).

Each task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5.0] and phase
phi ~ U[0, pi]; inputs x ~ U[-5, 5]. A K-shot task gives K support points and
(independently drawn) query points. Seeded like :class:`EpisodeSampler`: the
sampler owns its generator, so a reported MSE is reproducible.
"""

from __future__ import annotations

import math

import torch

from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class SinusoidTasks:
    """Draws sinusoid regression episodes: x [K, 1], y [K, 1]; ``n_way`` is 1."""

    def __init__(self, k_shot: int = 10, q_queries: int = 10, seed: int = 0) -> None:
        if k_shot < 1 or q_queries < 1:
            raise InputError(f"k_shot and q_queries must be >= 1, got {k_shot} and {q_queries}")
        self.k_shot, self.q_queries = k_shot, q_queries
        self._generator = torch.Generator().manual_seed(seed)

    def _uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self._generator)

    def sample_function(self) -> tuple[float, float]:
        """(amplitude, phase) of a new task."""
        return float(self._uniform((1,), *AMPLITUDE)), float(self._uniform((1,), *PHASE))

    def sample(self) -> Episode:
        amplitude, phase = self.sample_function()
        x = self._uniform((self.k_shot + self.q_queries, 1), *X_RANGE)
        y = amplitude * torch.sin(x - phase)
        return Episode(x[: self.k_shot], y[: self.k_shot], x[self.k_shot :], y[self.k_shot :], n_way=1)

    def episodes(self, count: int) -> list[Episode]:
        return [self.sample() for _ in range(count)]
