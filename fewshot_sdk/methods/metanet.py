"""Meta Networks (Munkhdalai & Yu 2017).

Two networks with slow weights: an embedding f_theta that gives memory keys, and a base learner
g_phi that classifies. A meta learner turns loss gradients (the "meta information") into fast weights:

- task level (§3.1, eq. 1-2): pairs of support examples give the embedding's verification loss
  L_emb (is the pair one class?); an LSTM F_w reads their gradients nabla_j = grad_theta L_emb(pair j)
  and outputs the task's fast weights theta+ = F_w(nabla_1..nabla_T);
- example level (eq. 3-4): each support example's task-loss gradient
  nabla_i = grad_phi L_task(g_phi(x'_i), y'_i) goes through an MLP G_v to give fast weights phi+_i,
  stored in a memory with key r'_i = f_{theta,theta+}(x'_i);
- a query x reads its fast weights from that memory by attention (eq. 5):
  phi+ = softmax(cosine(R, f_{theta,theta+}(x)))^T M, the kernel ``pairwise_softmax(r, R, "cosine", values=M)``;
- layer augmentation (§3.3): an augmented layer applies slow and fast weights to its input
  separately, passes both through its activation and sums them.

Choices made for a CPU budget (documented, not the paper's): both networks share the Conv4 backbone
as input encoder, and fast weights exist for the top layer of each (the embedding's last layer; the
base learner's output layer); F_w and G_v work coordinate-wise on gradients preprocessed as in
Andrychowicz et al. (2016); the gradients are inputs to the meta learner (detached), so
meta-training is first-order through them. The base learner's outputs are ``max_classes`` label
slots fixed at training (shuffled per training episode); an n-way task uses the first n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.func import grad, vmap

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.kernels import pairwise_softmax
from fewshot_sdk.methods._label_slots import check_ways, shuffled_slots, task_slots
from fewshot_sdk.methods.base import Learner, TaskState
from fewshot_sdk.methods.functional_call import call
from fewshot_sdk.methods.lstm_meta import preprocess as preprocess_gradient  # Andrychowicz et al.'s, p = 10
from fewshot_sdk.registry import register_method


class MetaNetConfig(StrictModel):
    max_classes: int = Field(20, ge=2, description="base learner outputs: the most ways a task may have")
    key_size: int = Field(64, ge=1, description="embedding (memory key) size")
    base_hidden: int = Field(64, ge=1, description="base learner hidden units")
    meta_hidden: int = Field(20, ge=1, description="hidden units of F_w (LSTM) and G_v (MLP)")
    verification_pairs: int = Field(16, ge=1, description="support pairs whose gradients make theta+ (T)")
    temperature: float = Field(0.1, gt=0, description="cosine / temperature before the memory softmax")
    pair_seed: int = 0


def verification_pairs(labels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``count`` support pairs (i, j), half same-class where the support has them; seeded, so adapt is repeatable.

    Returns the two index vectors and the same-class targets (float).
    """
    n = len(labels)
    i, j = torch.triu_indices(n, n, offset=1, device=labels.device)
    same = labels[i] == labels[j]
    generator = torch.Generator().manual_seed(seed)
    positives = same.nonzero().flatten().cpu()
    negatives = (~same).nonzero().flatten().cpu()
    positives = positives[torch.randperm(len(positives), generator=generator)][: count // 2]
    negatives = negatives[torch.randperm(len(negatives), generator=generator)][: count - len(positives)]
    chosen = torch.cat([positives, negatives]).to(labels.device)
    return i[chosen], j[chosen], same[chosen].float()


class AugmentedLinear(nn.Module):
    """Layer augmentation: act(W x + b) + act(W+ x + b+), with the fast weights (W+, b+) given per call."""

    def __init__(self, in_features: int, out_features: int, activation: bool) -> None:
        super().__init__()
        self.slow = nn.Linear(in_features, out_features)
        self.activation = activation

    def forward(self, x: torch.Tensor, fast_w: torch.Tensor, fast_b: torch.Tensor) -> torch.Tensor:
        slow, fast = self.slow(x), x @ fast_w.t() + fast_b
        if self.activation:
            slow, fast = F.relu(slow), F.relu(fast)
        return slow + fast


class CoordinateLSTM(nn.Module):
    """F_w: an LSTM over the T gradients of each coordinate; its last output is that coordinate's fast weight."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(2, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, gradients: torch.Tensor) -> torch.Tensor:
        """gradients [T, P] -> fast weights [P]."""
        inputs = preprocess_gradient(gradients)
        h = inputs.new_zeros(gradients.shape[1], self.cell.hidden_size)
        c = torch.zeros_like(h)
        for step in inputs:
            h, c = self.cell(step, (h, c))
        return self.out(h).squeeze(-1)


class CoordinateMLP(nn.Module):
    """G_v: a 3-layer MLP from each gradient coordinate to that coordinate's fast weight."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, gradients: torch.Tensor) -> torch.Tensor:
        """gradients [N, P] -> fast weights [N, P]."""
        return self.net(preprocess_gradient(gradients)).squeeze(-1)


@register_method
class MetaNet(Learner):
    method = "metanet"
    aliases = ("meta-networks",)
    Config = MetaNetConfig
    config: MetaNetConfig

    def build(self) -> None:
        cfg = self.config
        features = self.backbone.out_features
        self.embedding = AugmentedLinear(features, cfg.key_size, activation=True)  # f_theta's top layer
        self.base_hidden = nn.Sequential(nn.Linear(features, cfg.base_hidden), nn.ReLU())  # g_phi, slow only
        self.base_output = AugmentedLinear(cfg.base_hidden, cfg.max_classes, activation=False)  # g_phi's top
        self.verification = nn.Parameter(torch.tensor([5.0, -2.5]))  # scale and bias of P(same | cosine)
        self.task_meta = CoordinateLSTM(cfg.meta_hidden)  # F_w
        self.example_meta = CoordinateMLP(cfg.meta_hidden)  # G_v

    # ------------------------------------------------------------ meta information
    def embedding_gradients(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[T, P_theta]: per pair, grad of the verification loss w.r.t. the embedding's slow top layer."""
        first, second, same = verification_pairs(labels, self.config.verification_pairs, self.config.pair_seed)
        params = {k: v.detach() for k, v in self.embedding.slow.named_parameters()}
        scale, bias = self.verification.detach()

        def pair_loss(
            p: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor, target: torch.Tensor
        ) -> torch.Tensor:
            ra = F.relu(call(self.embedding.slow, p, a))
            rb = F.relu(call(self.embedding.slow, p, b))
            logit = scale * F.cosine_similarity(ra, rb, dim=-1, eps=1e-8) + bias
            return F.binary_cross_entropy_with_logits(logit, target)

        z = z.detach()
        grads = vmap(grad(pair_loss), in_dims=(None, 0, 0, 0))(params, z[first], z[second], same)
        return torch.cat([grads["weight"].flatten(1), grads["bias"]], 1)

    def base_gradients(self, u: torch.Tensor, labels: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """[N, P_phi]: per support example, grad of the task loss w.r.t. the output layer's slow weights.

        For a softmax cross-entropy over the task's slots this is (p_i - y_i) [u_i, 1]^T,
        written out rather than differentiated.
        """
        u = u.detach()
        logits = self.base_output.slow(u).detach().index_select(1, slots)
        error = logits.softmax(-1) - F.one_hot(labels, len(slots)).to(u.dtype)
        full = u.new_zeros(len(u), self.config.max_classes).index_copy(1, slots, error)
        inputs = torch.cat([u, u.new_ones(len(u), 1)], 1)
        return (full.unsqueeze(2) * inputs.unsqueeze(1)).flatten(1)

    # ------------------------------------------------------------ the model
    def split_theta(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.out_features
        return theta[:, :features], theta[:, features]

    def task_state(self, support_x: torch.Tensor, support_y: torch.Tensor, slots: torch.Tensor) -> TaskState:
        """theta+ (F_w over the verification gradients), keys R and memory M of phi+_i (G_v over task gradients)."""
        z = self.backbone(support_x)
        theta = self.task_meta(self.embedding_gradients(z, support_y))
        fast_w, fast_b = self.split_theta(theta.view(self.config.key_size, -1))
        keys = self.embedding(z, fast_w, fast_b)
        memory = self.example_meta(self.base_gradients(self.base_hidden(z), support_y, slots))
        return {"fast_w": fast_w, "fast_b": fast_b, "keys": keys, "memory": memory, "classes": slots}

    def fit_task(
        self, support_x: torch.Tensor, support_y: torch.Tensor, n_way: int, options: StrictModel | None = None
    ) -> TaskState:
        check_ways(n_way, self.config.max_classes, self.method)
        return self.task_state(support_x, support_y, task_slots(n_way, support_y.device))

    def score(self, state: TaskState, query_x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(query_x)
        r = self.embedding(z, state["fast_w"], state["fast_b"])
        phi = pairwise_softmax(r, state["keys"], "cosine", values=state["memory"], temperature=self.config.temperature)
        phi = phi.view(-1, self.config.max_classes, self.config.base_hidden + 1)
        u = self.base_hidden(z)
        fast = (phi[:, :, :-1] @ u.unsqueeze(2)).squeeze(2) + phi[:, :, -1]
        logits = self.base_output.slow(u) + fast  # layer augmentation of the (linear) output layer
        return logits.index_select(1, state["classes"])

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Query cross-entropy with the episode's classes on random label slots (so every slot is trained)."""
        check_ways(episode.n_way, self.config.max_classes, self.method)
        slots = shuffled_slots(episode.n_way, self.config.max_classes, episode.support_y.device)
        logits = self.score(self.task_state(episode.support_x, episode.support_y, slots), episode.query_x)
        return F.cross_entropy(logits, episode.query_y), logits
