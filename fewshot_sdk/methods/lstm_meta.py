"""Optimization as a Model for Few-Shot Learning (Ravi & Larochelle 2017): an LSTM that trains the learner.

The learner's parameters are the cell state of an LSTM (eq. 2):

    c_t = f_t * c_{t-1} + i_t * (-grad_{theta_{t-1}} L_t),   theta_t = c_t,

with the learning rate i_t and forget gate f_t computed per coordinate (eq. 3-4) from the learner's
preprocessed gradient and loss, the current parameter value and the previous gate:

    i_t = sigma(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I),   f_t = sigma(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F),

where h_t is the hidden state of a first, ordinary LSTM layer over [preprocess(grad), preprocess(loss)]
(Andrychowicz et al. 2016's log/sign map). Parameters are shared across coordinates. The initial cell
state c_0 is the learner's meta-learned initialisation. With f_t = 1 and i_t = alpha the update is SGD.

Training follows sec. 3.2: T updates on the support set, then the query loss at theta_T trains the
meta-learner and c_0; the learner's gradients are inputs only (gradient-independence assumption: no
backpropagation through them). Batch norm: the support's batch statistics during the T updates; for
the queries, the support statistics under theta_T (``bn="support"``, default) or, as in the paper,
the query batch's (``bn="transductive"``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.errors import AdaptationError
from fewshot_sdk.kernels import sgd_step
from fewshot_sdk.methods._gradient_learner import GradientConfig, GradientLearner
from fewshot_sdk.methods.base import TaskState
from fewshot_sdk.methods.functional_call import Params
from fewshot_sdk.methods.inner_loop import Order
from fewshot_sdk.registry import register_method


class LSTMMetaConfig(GradientConfig):
    inner_steps: int = Field(5, ge=0, description="T: learner updates on the support set")
    test_steps: int = Field(5, ge=0, description="T at test time (the paper uses the same T)")
    hidden: int = Field(20, ge=1, description="first LSTM layer's hidden size (paper: 20)")
    preprocess_p: float = Field(10.0, gt=0, description="p of the log/sign gradient preprocessing")
    init_forget_bias: float = Field(5.0, description="b_F at init: f ~ 1, keep the parameters")
    init_lr: float = Field(0.01, gt=0, lt=1, description="sigma(b_I) at init: the starting learning rate")


def preprocess(x: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al. (2016): (log|x|/p, sign x) if |x| >= e^-p, else (-1, e^p x). [...] -> [..., 2].

    Also Meta Networks' gradient preprocessing (:mod:`.metanet`), with their p = 10.
    """
    big = x.abs() >= math.exp(-p)
    log_part = torch.where(big, x.abs().clamp_min(1e-30).log() / p, torch.full_like(x, -1.0))
    sign_part = torch.where(big, x.sign(), x * math.exp(p))
    return torch.stack([log_part, sign_part], dim=-1)


def lstm_update(theta: Tensor, grad: Tensor, forget: Tensor, rate: Tensor) -> Tensor:
    """c_t = f_t * theta_{t-1} - i_t * grad (eq. 2), through the shared SGD kernel."""
    return sgd_step([forget * theta], [grad], [rate])[0]


class MetaLearnerLSTM(nn.Module):
    """The coordinate-wise 2-layer meta-learner: an LSTM layer, then the gate cell whose state is theta."""

    def __init__(self, hidden: int, init_forget_bias: float, init_lr: float) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(4, hidden)
        self.forget = nn.Linear(hidden + 2, 1)
        self.rate = nn.Linear(hidden + 2, 1)
        with torch.no_grad():
            for gate in (self.forget, self.rate):
                nn.init.uniform_(gate.weight, -0.01, 0.01)
            self.forget.bias.fill_(init_forget_bias)
            self.rate.bias.fill_(math.log(init_lr / (1 - init_lr)))

    def gates(
        self, inputs: Tensor, theta: Tensor, state: tuple[Tensor, Tensor] | None, f_prev: Tensor, i_prev: Tensor
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """(f_t, i_t) per coordinate (eq. 3-4) and the first layer's new state."""
        h, c = self.lstm(inputs, state)
        column = theta.unsqueeze(1)
        f = torch.sigmoid(self.forget(torch.cat([h, column, f_prev.unsqueeze(1)], 1))).squeeze(1)
        i = torch.sigmoid(self.rate(torch.cat([h, column, i_prev.unsqueeze(1)], 1))).squeeze(1)
        return f, i, (h, c)


class LSTMMetaOptions(StrictModel):
    """adapt(support, steps=); no lr: the LSTM meta-learner learns its own learning rates."""

    steps: int | None = Field(None, ge=0, strict=True, description="update steps T (default: config.test_steps)")


@register_method
class LSTMMetaLearner(GradientLearner):
    """Ravi & Larochelle's meta-learner LSTM training a Conv4 learner."""

    method = "lstm-meta"
    aliases = ("meta-lstm", "lstm-meta-learner")
    Config = LSTMMetaConfig
    config: LSTMMetaConfig
    Options = LSTMMetaOptions
    #: the paper's learner: four 3x3 conv layers with 32 filters (every coordinate runs through the LSTM)
    default_backbone: ClassVar[dict[str, object]] = {"hidden": 32}

    def build(self) -> None:
        super().build()
        self.meta_learner = MetaLearnerLSTM(self.config.hidden, self.config.init_forget_bias, self.config.init_lr)

    def inner_adapt(
        self, support_x: Tensor, support_y: Tensor, n_way: int, steps: int, lr: float, order: Order
    ) -> TaskState:
        """T updates c_t = f_t c_{t-1} - i_t grad_t on the support set (Algorithm 1, lines 5-11).

        The LSTM learns its own rates, so ``lr`` is unused. Meta-training (any ``order`` but
        ``"none"``) keeps the graph through theta's updates and the LSTM's gates; the
        learner's gradients enter as inputs only (the paper's gradient independence).
        """
        self.check_task(support_x, n_way)
        with torch.set_grad_enabled(torch.is_grad_enabled() and order != "none"):
            return self.lstm_updates(support_x, support_y, n_way, steps)

    def lstm_updates(self, support_x: Tensor, support_y: Tensor, n_way: int, steps: int) -> TaskState:
        params = self.initial_params(n_way)
        names = list(params)
        sizes = [p.numel() for p in params.values()]
        theta = torch.cat([p.reshape(-1) for p in params.values()])
        loss_fn = self.support_loss_fn(support_x, support_y)
        f_prev = torch.ones_like(theta)
        i_prev = torch.full_like(theta, self.config.init_lr)
        lstm_state: tuple[Tensor, Tensor] | None = None
        for step in range(steps):
            current = self.unflatten(theta, names, sizes, params)
            with torch.enable_grad():
                probe = {n: v.detach().requires_grad_() for n, v in current.items()}
                loss = loss_fn(probe)
                grads = torch.autograd.grad(loss, list(probe.values()))
            if not bool(torch.isfinite(loss)):
                raise AdaptationError(f"the support loss is {float(loss.detach()):.3g} at adaptation step {step}")
            # gradient-independence: the learner's gradient and loss are inputs, not differentiated
            grad = torch.cat([g.reshape(-1) for g in grads]).detach()
            loss_in = preprocess(loss.detach().reshape(1), self.config.preprocess_p).expand(len(theta), 2)
            inputs = torch.cat([preprocess(grad, self.config.preprocess_p), loss_in], dim=1)
            f_prev, i_prev, lstm_state = self.meta_learner.gates(inputs, theta, lstm_state, f_prev, i_prev)
            theta = lstm_update(theta, grad, f_prev, i_prev)
        return self.with_support_stats(self.unflatten(theta, names, sizes, params), support_x)

    @staticmethod
    def unflatten(theta: Tensor, names: list[str], sizes: list[int], like: Params) -> Params:
        return {n: chunk.view_as(like[n]) for n, chunk in zip(names, torch.split(theta, sizes), strict=True)}
