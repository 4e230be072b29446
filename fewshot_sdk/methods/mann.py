"""Memory-Augmented Neural Network (Santoro, Bartunov, Botvinick, Wierstra & Lillicrap 2016).

An LSTM controller reads and writes an external memory matrix. Reads are content-based (softmax of
the cosine of the controller's key with every row, then a weighted sum: the kernel
``pairwise_softmax(..., "cosine")``); writes use Least Recently Used Access (eqs. 5-8, :mod:`._memory`).

Training (Santoro §3): each input of an episode's sequence comes with the *previous* step's label,
(x_t, y_{t-1}), and labels are shuffled per episode, so the only way to be right is to bind samples
to labels in memory and retrieve them. The loss is the cross-entropy of every step's prediction of
y_t (plus the queries', below).

What is written (eq. 8 writes the key k_t): the label of x_{t-1} arrives at step t, so the row
written then binds the previous key to it, (k_{t-1}, y_{t-1}): ``memory_width`` key entries, then
``max_classes`` label entries; addressing compares the key part. Writing k_t itself (literally
eq. 8) leaves that binding to the LSTM, and on a CPU budget (a few hundred updates) that did not
leave chance level in our measurements, on Omniglot or synthetic episodes; with the explicit
binding a 5-way synthetic task is learnt in ~250 updates. The LRUA addressing (read, least-used,
write weights, zeroing, usage) is exactly the paper's.

In the SDK:

- ``adapt(support)`` feeds the support sequence (x_t, y_{t-1}) and a last step (null input, y_N)
  that writes the final label, and keeps the controller state and the memory. The support order
  shapes the memory, so it is a fixed permutation seeded by ``support_order_seed`` (training draws
  one per episode): one support set always gives the same task.
- ``predict(query)`` presents each query from that state with a null label and reads without
  writing, so a prediction is independent of the other queries and of their order.

The label input/output is a one-hot over ``max_classes`` fixed at training; an n-way task uses the
first n outputs, and training maps each episode's classes to a random subset of them. Inputs go
through the Conv4 backbone (``encoder="backbone"``, default) or enter as raw pixels
(``encoder="pixels"``, as Santoro's 20x20 images did).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError
from fewshot_sdk.kernels import pairwise_softmax
from fewshot_sdk.methods import _memory
from fewshot_sdk.methods._label_slots import check_ways, shuffled_slots, task_slots
from fewshot_sdk.methods.base import Learner, TaskState
from fewshot_sdk.methods.step_metrics import StepMetrics
from fewshot_sdk.registry import register_method

#: Santoro initialises memory to a small constant so that the first cosine scores are defined.
MEMORY_INIT = 1e-6


class MANNConfig(StrictModel):
    max_classes: int = Field(20, ge=2, description="one-hot label size: the most ways a task may have")
    encoder: Literal["backbone", "pixels"] = "backbone"
    controller_size: int = Field(200, ge=1, description="LSTM hidden units (Santoro: 200)")
    memory_slots: int = Field(128, ge=2, description="memory rows (Santoro: 128)")
    memory_width: int = Field(
        40, ge=1, description="key width (Santoro: 40); a row also holds max_classes label entries"
    )
    read_heads: int = Field(4, ge=1, description="read heads (Santoro: 4)")
    gamma: float = Field(0.95, ge=0, le=1, description="usage decay, eq. 5")
    temperature: float = Field(
        0.1, gt=0, description="cosine / temperature before the read softmax (Santoro: a plain softmax, 1.0)"
    )
    support_loss_weight: float = Field(1.0, ge=0, description="weight of the per-step loss on the support sequence")
    vary_tasks: bool = Field(True, description="training: per batch, draw ways in [2, n_way] and shots in [1, k_shot]")
    support_order_seed: int = 0


class SequenceState:
    """The recurrent state of B episodes: controller (h, c), last reads, memory, usage, last read weights and keys."""

    def __init__(self, batch: int, learner: MANN, reference: torch.Tensor) -> None:
        cfg = learner.config
        zeros = reference.new_zeros
        self.h = zeros(batch, cfg.controller_size)
        self.c = zeros(batch, cfg.controller_size)
        row = cfg.memory_width + cfg.max_classes
        self.reads = zeros(batch, cfg.read_heads * row)
        self.memory = torch.full(
            (batch, cfg.memory_slots, row), MEMORY_INIT, dtype=reference.dtype, device=reference.device
        )
        self.prev_keys = zeros(batch, cfg.read_heads, cfg.memory_width)
        self.usage = zeros(batch, cfg.memory_slots)
        self.read_weights = zeros(batch, cfg.read_heads, cfg.memory_slots)


@register_method
class MANN(Learner):
    method = "mann"
    aliases = ("santoro",)
    Config = MANNConfig
    config: MANNConfig

    def build(self) -> None:
        cfg = self.config
        pixels = math.prod(self.preprocess_config.input_shape)
        features = self.backbone.out_features if cfg.encoder == "backbone" else pixels
        heads, width, row = cfg.read_heads, cfg.memory_width, cfg.memory_width + cfg.max_classes
        self.controller = nn.LSTMCell(features + cfg.max_classes + heads * row, cfg.controller_size)
        self.key = nn.Linear(cfg.controller_size, heads * width)
        self.gate = nn.Linear(cfg.controller_size, heads)
        self.output = nn.Linear(cfg.controller_size + heads * row, cfg.max_classes)

    # ------------------------------------------------------------ the model
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) if self.config.encoder == "backbone" else x.flatten(1)

    def _keys(self, h: torch.Tensor) -> torch.Tensor:
        """k_t = tanh(W_k h_t), one per head: [B, H, W]."""
        return torch.tanh(self.key(h)).view(-1, self.config.read_heads, self.config.memory_width)

    def _address(self, keys: torch.Tensor) -> torch.Tensor:
        """A key as a row-wide query: zeros over the label entries, so addressing compares keys only."""
        return F.pad(keys, (0, self.config.max_classes))

    def step(self, state: SequenceState, features: torch.Tensor, prev_labels: torch.Tensor) -> torch.Tensor:
        """One time step with a write: controller, LRUA write, content read; returns logits [B, max_classes]."""
        cfg = self.config
        state.h, state.c = self.controller(torch.cat([features, prev_labels, state.reads], 1), (state.h, state.c))
        keys = self._keys(state.h)
        # eq. 8 writes the key; the label of x_{t-1} arrives now, so the row written is (k_{t-1}, y_{t-1})
        bound = torch.cat([state.prev_keys, prev_labels.unsqueeze(1).expand(-1, cfg.read_heads, -1)], -1)
        written = _memory.write_weights(self.gate(state.h), state.read_weights, state.usage)
        state.memory = _memory.write(state.memory, state.usage, written, bound)
        state.read_weights = _memory.read_weights(self._address(keys), state.memory, cfg.temperature)
        state.prev_keys = keys
        state.usage = _memory.update_usage(state.usage, state.read_weights, written, cfg.gamma)
        state.reads = (state.read_weights @ state.memory).flatten(1)
        return self.output(torch.cat([state.h, state.reads], 1))

    def run_sequence(
        self, features: torch.Tensor, labels: torch.Tensor, flush: bool = True
    ) -> tuple[SequenceState, torch.Tensor]:
        """Feed (x_t, y_{t-1}) for t = 1..T (features [B, T, F], labels [B, T] in 0..max_classes-1).

        Returns the state and the per-step logits [B, T, max_classes] (step t predicts y_t).
        With ``flush`` a last step (null input, y_T) writes the final label.
        """
        batch, steps = labels.shape
        one_hot = F.one_hot(labels, self.config.max_classes).to(features.dtype)
        null_label = features.new_zeros(batch, self.config.max_classes)
        state = SequenceState(batch, self, features)
        logits = []
        for t in range(steps):
            logits.append(self.step(state, features[:, t], one_hot[:, t - 1] if t > 0 else null_label))
        if flush:
            self.step(state, features.new_zeros(batch, features.shape[2]), one_hot[:, steps - 1])
        return state, torch.stack(logits, 1)

    def read_out(
        self, h: torch.Tensor, c: torch.Tensor, reads: torch.Tensor, memory: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """Logits [B, max_classes] of B queries presented with a null label from one state; no write.

        ``h``, ``c``, ``reads`` are [1, .] (one task), ``memory`` is [S, key + label entries]. The read is
        the fused kernel softmax(cosine(k, M) / T) @ M.
        """
        cfg = self.config
        batch = features.shape[0]  # shape, not len(): traced as a dynamic size for export
        null_label = features.new_zeros(batch, cfg.max_classes)
        controller_in = torch.cat([features, null_label, reads.expand(batch, -1)], 1)
        h, _ = self.controller(controller_in, (h.expand(batch, -1), c.expand(batch, -1)))
        keys = self._address(self._keys(h)).reshape(-1, memory.shape[1])
        read = pairwise_softmax(keys, memory, "cosine", values=memory, temperature=cfg.temperature)
        return self.output(torch.cat([h, read.view(batch, -1)], 1))

    # ------------------------------------------------------------ the SDK hooks
    def support_order(self, count: int) -> torch.Tensor:
        """The fixed, seeded order in which ``adapt`` writes the support set (it shapes the memory)."""
        generator = torch.Generator().manual_seed(self.config.support_order_seed)
        return torch.randperm(count, generator=generator)

    def fit_task(
        self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> TaskState:
        check_ways(n_way, self.config.max_classes, self.method)
        order = self.support_order(len(support_y)).to(support_y.device)
        features = self.encode(support_x[order]).unsqueeze(0)
        state, _ = self.run_sequence(features, support_y[order].unsqueeze(0))
        return {
            "memory": state.memory[0],
            "h": state.h,
            "c": state.c,
            "reads": state.reads,
            "classes": task_slots(n_way, support_y.device),
        }

    def score(self, state: TaskState, query_x: torch.Tensor) -> torch.Tensor:
        logits = self.read_out(state["h"], state["c"], state["reads"], state["memory"], self.encode(query_x))
        return logits.index_select(1, state["classes"])

    # ------------------------------------------------------------ training
    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        loss, logits, _ = self.batch_loss([episode])
        return loss, logits

    def meta_gradients(self, episodes: Sequence[Episode], metrics: StepMetrics) -> None:
        """One loss over all episodes at once: the recurrence runs batched over the meta-batch."""
        if self.config.vary_tasks:
            episodes = vary_task_size(episodes)
        loss, logits, targets = self.batch_loss(episodes)
        loss.backward()
        metrics.add(loss, logits, targets, tasks=len(episodes))

    def batch_loss(self, episodes: Sequence[Episode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Label-offset sequences with per-episode shuffled labels and order; loss on support steps and queries.

        Returns the loss, the query logits over the episode's ways (episode label order)
        and the query labels.
        """
        n_way = episodes[0].n_way
        if any(ep.n_way != n_way or len(ep.support_y) != len(episodes[0].support_y) for ep in episodes):
            raise InputError("a MANN training batch needs episodes of one shape (same ways and shots)")
        check_ways(n_way, self.config.max_classes, self.method)
        device = episodes[0].support_x.device
        steps = len(episodes[0].support_y)
        orders = torch.stack([torch.randperm(steps) for _ in episodes]).to(device)
        label_maps = torch.stack([shuffled_slots(n_way, self.config.max_classes, device) for _ in episodes])
        support_y = torch.stack([ep.support_y for ep in episodes]).gather(1, orders)
        support_labels = label_maps.gather(1, support_y)
        images = torch.cat([torch.cat([ep.support_x[o], ep.query_x]) for ep, o in zip(episodes, orders, strict=True)])
        features = self.encode(images)
        features = features.view(len(episodes), -1, features.shape[-1])
        state, step_logits = self.run_sequence(features[:, :steps], support_labels)
        query_logits = torch.stack(
            [
                self.read_out(state.h[b : b + 1], state.c[b : b + 1], state.reads[b : b + 1], state.memory[b], f)
                for b, f in enumerate(features[:, steps:])
            ]
        )
        query_y = torch.stack([ep.query_y for ep in episodes])
        query_loss = F.cross_entropy(query_logits.flatten(0, 1), label_maps.gather(1, query_y).flatten())
        support_loss = F.cross_entropy(step_logits.flatten(0, 1), support_labels.flatten())
        loss = query_loss + self.config.support_loss_weight * support_loss
        episode_logits = torch.stack([q.index_select(1, m) for q, m in zip(query_logits, label_maps, strict=True)])
        return loss, episode_logits.flatten(0, 1), query_y.flatten()


def vary_task_size(episodes: Sequence[Episode]) -> list[Episode]:
    """Cut a batch of episodes to one random size: ways in [2, n_way], shots in [1, k_shot], all queries kept.

    One MANN then serves 5-way and 20-way, 1-shot and 5-shot tasks; the label slots of
    the unused ways are still trained because labels are shuffled over ``max_classes``.
    """
    first = episodes[0]
    shots = len(first.support_y) // first.n_way
    ways = int(torch.randint(2, first.n_way + 1, ()))
    k = int(torch.randint(1, shots + 1, ()))
    out = []
    for ep in episodes:
        keep_s = (ep.support_y < ways) & (torch.arange(len(ep.support_y), device=ep.support_y.device) % shots < k)
        keep_q = ep.query_y < ways
        out.append(Episode(ep.support_x[keep_s], ep.support_y[keep_s], ep.query_x[keep_q], ep.query_y[keep_q], ways))
    return out
