"""Full Context Embeddings of Matching Networks (Vinyals et al. 2016, appendix A).

Support side (A.2): a bidirectional LSTM reads the support embeddings g'(x_i) as a
sequence and adds both directions to a skip connection,

    g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i).

Query side (A.1): an LSTM whose input is always f'(x) and whose recurrent input is
the previous state concatenated with a read from g(S), for K steps:

    h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})
    h_k       = h^_k + f'(x)
    r_{k-1}   = sum_i a(h_{k-1}, g(x_i)) g(x_i),   a(h, g(x_i)) = softmax_i(h^T g(x_i))
    f(x, S)   = h_K

with h_0 = c_0 = 0 (the paper leaves them unstated; zeros are the LSTM convention).
The read uses a dot product, which is not one of the kernels' metrics, so it is a
plain softmax(h G^T) G here.
"""

from __future__ import annotations

import torch
from torch import nn


class SupportContext(nn.Module):
    """g(S): bidirectional LSTM over the support sequence plus the skip connection."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, features, batch_first=True, bidirectional=True)

    def forward(self, support: torch.Tensor) -> torch.Tensor:
        """[N, D] support embeddings g'(x_i) in support order -> [N, D] context embeddings."""
        outputs, _ = self.lstm(support[None])
        forward, backward = outputs[0].chunk(2, dim=-1)
        return forward + backward + support


class AttentionReadLSTM(nn.Module):
    """f(x, S) = attLSTM(f'(x), g(S), K), batched over queries.

    The LSTM's recurrent input is [h, r] (2D) while its cell and output are D-dimensional,
    exactly as the paper writes it; gates are ordered input, forget, cell, output.
    """

    def __init__(self, features: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.input_gates = nn.Linear(features, 4 * features)
        self.state_gates = nn.Linear(2 * features, 4 * features, bias=False)

    def read(self, h: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """r = sum_i softmax_i(h^T g(x_i)) g(x_i): [B, D] x [N, D] -> [B, D]."""
        return torch.softmax(h @ support.t(), dim=-1) @ support

    def cell(
        self, x: torch.Tensor, h: torch.Tensor, r: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})."""
        gates = self.input_gates(x) + self.state_gates(torch.cat([h, r], dim=-1))
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """[B, D] query embeddings f'(x), [N, D] support context g(S) -> [B, D] f(x, S)."""
        h = torch.zeros_like(queries)
        c = torch.zeros_like(queries)
        for _ in range(self.steps):
            r = self.read(h, support)
            h_hat, c = self.cell(queries, h, r, c)
            h = h_hat + queries
        return h
