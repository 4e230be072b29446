"""What MAML, first-order MAML, Reptile and the LSTM meta-learner share: a network adapted by gradient steps.

The network is the backbone plus a linear head with ``n_way`` outputs (1 for regression). Its
meta-learned parameters are the initialisation theta; the task state is the adapted theta' as a
flat dict (names as in ``state_dict``, e.g. ``head.weight``), plus, with ``bn="support"``, the
support set's batch-norm statistics under theta' (``backbone.body.0.1.mean`` / ``.var``).

Choices, and why:

- **Head and class count.** The head has ``n_way`` rows fixed at meta-training, as in MAML.
  Episode labels go to rows at random in meta-training, so every row is an interchangeable
  initialisation: a support set with fewer classes uses the first rows; one with more is refused.
- **Batch norm.** As in MAML, no running averages: the inner loop uses the support batch's
  statistics. For the queries the paper uses the query batch's (transductive: a prediction
  depends on the other queries, a batch of one breaks). The default ``bn="support"`` normalises
  queries by the support statistics under theta', in meta-training and at test time, so
  predictions are per-example; ``bn="transductive"`` is the paper's setting.
- **Steps.** ``inner_steps`` in meta-training, ``test_steps`` at adaptation (MAML: 1 and 3 on
  Omniglot); ``adapt(support, steps=, lr=)`` overrides the test-time ones.
- **Graph.** Meta-training differentiates through the inner loop to the method's ``meta_order``
  (MAML: second, first-order MAML: first); test-time adaptation passes ``"none"`` and backtracks
  a step that makes the support loss explode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.data.task_kinds import KindName
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.base import Learner, TaskState
from fewshot_sdk.methods.functional_call import Params, call, shadow_module
from fewshot_sdk.methods.inner_loop import Order, SupportLoss, inner_loop, vmappable_gradient
from fewshot_sdk.methods.step_metrics import StepMetrics
from fewshot_sdk.methods.task_batchnorm import TaskBatchNorm, use_task_batchnorm
from fewshot_sdk.models.folding import fold_batchnorm_


class GradientConfig(StrictModel):
    """Settings every gradient-based method shares."""

    task: KindName = "classification"
    n_way: int = Field(5, ge=1, description="head rows (classes); a support set may use fewer")
    inner_steps: int = Field(1, ge=0, description="adaptation steps in meta-training")
    test_steps: int = Field(3, ge=0, description="adaptation steps at test time (adapt's default)")
    inner_lr: float = Field(0.4, gt=0, allow_inf_nan=False, description="inner-loop step size alpha")
    bn: Literal["support", "transductive"] = Field(
        "support", description="query normalisation: support statistics (deployable) or the query batch's (paper)"
    )


class GradientOptions(StrictModel):
    """adapt(support, steps=, lr=) overrides the configured test-time steps and step size."""

    steps: int | None = Field(None, ge=0, strict=True, description="gradient steps (default: config.test_steps)")
    lr: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="inner-loop step size (default: config.inner_lr)"
    )


class GradientLearner(Learner):
    """A backbone + linear head whose parameters are adapted per task by a functional inner loop."""

    config: GradientConfig
    Options: ClassVar[type[StrictModel]] = GradientOptions
    #: whether ``train_step`` may batch tasks with vmap (methods whose meta-update is MAML's)
    vmap_tasks: ClassVar[bool] = False
    #: a task's network is theta' baked into a folded copy (:func:`adapted_network`), built per task
    has_inference_twin: ClassVar[bool] = False

    def build(self) -> None:
        use_task_batchnorm(self.backbone, "backbone.")
        self.head = nn.Linear(self.backbone.out_features, self.kind.head_outputs(self.config.n_way))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    # ---------------------------------------------------------------- helpers
    def network_params(self) -> Params:
        """theta: the network's own parameters (not a meta-learner's, e.g. the LSTM's)."""
        params = dict(self.named_parameters(prefix="", recurse=True))
        return {name: p for name, p in params.items() if name.startswith(("backbone.", "head."))}

    def initial_params(self, n_way: int) -> Params:
        """theta, with the head sliced to the support set's class count."""
        params = self.network_params()
        if self.kind.classifies:
            params["head.weight"] = params["head.weight"][:n_way]
            params["head.bias"] = params["head.bias"][:n_way]
        return params

    def task_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The task kind's loss: cross-entropy, or mean squared error for regression (MAML sec. 3.1)."""
        return self.kind.loss(outputs, targets)

    def support_loss_fn(self, x: Tensor, y: Tensor) -> SupportLoss:
        shadow = shadow_module(self)  # one per adaptation, whose steps call it in turn on one thread

        def support_loss(params: Params, stats: dict[str, Tensor] | None = None) -> Tensor:
            return self.task_loss(call(self, params, x, stats=stats, shadow=shadow), y)

        return support_loss

    @property
    def meta_order(self) -> Order:
        """How much graph of the inner loop meta-training keeps (MAML's full second order by default)."""
        return "second"

    def with_support_stats(self, params: Params, support_x: Tensor) -> TaskState:
        """Add the support batch's BN statistics under ``params`` (``bn="support"``)."""
        state = dict(params)
        if self.config.bn == "support":
            stats: dict[str, Tensor] = {}
            call(self, params, support_x, stats=stats)
            state.update(stats)
        return state

    def check_task(self, support_x: Tensor, n_way: int) -> None:
        """What only this family checks: regression input width, or the head's class count."""
        if not self.kind.classifies:
            width = self.backbone_config.in_features
            if support_x.ndim != 2 or support_x.shape[1] != width:  # (targets: checked in adapt_tensors)
                raise InputError(
                    f"{self.method} regression takes inputs x of shape [N, {width}], got {list(support_x.shape)}"
                )
        elif n_way > self.head.out_features:
            raise InputError(
                f"this {self.method} model has a {self.head.out_features}-way head but the support set has "
                f"{n_way} classes; train one with n_way >= {n_way}"
            )

    def test_settings(self, options: StrictModel | None) -> tuple[int, float]:
        """(steps, lr) of test-time adaptation: ``adapt``'s options, else the configured defaults."""
        steps, lr = getattr(options, "steps", None), getattr(options, "lr", None)
        cfg = self.config
        return cfg.test_steps if steps is None else int(steps), cfg.inner_lr if lr is None else float(lr)

    # ----------------------------------------------------------- method hooks
    def inner_adapt(
        self, support_x: Tensor, support_y: Tensor, n_way: int, steps: int, lr: float, order: Order
    ) -> TaskState:
        """theta' = theta - alpha grad L_support(theta), ``steps`` times (MAML eq. 1).

        ``order="none"`` is test time: no graph, and a step that makes the support loss
        explode is retried at a smaller step size (``backtrack``).
        """
        self.check_task(support_x, n_way)
        stats: dict[str, Tensor] | None = {} if self.config.bn == "support" else None
        loss_fn, theta = self.support_loss_fn(support_x, support_y), self.initial_params(n_way)
        adapted = inner_loop(loss_fn, theta, steps, lr, order, backtrack=order == "none", stats=stats)
        return {**adapted, **(stats or {})}

    def fit_task(
        self, support_x: Tensor, support_y: Tensor, n_way: int, options: StrictModel | None = None
    ) -> TaskState:
        """Test-time adaptation: ``test_steps`` (or ``options.steps``) steps, no graph."""
        steps, lr = self.test_settings(options)
        return self.inner_adapt(support_x, support_y, n_way, steps, lr, "none")

    def score(self, state: TaskState, query_x: Tensor) -> Tensor:
        """The network with theta' swapped in through ``functional_call`` (meta-training, calibration).

        ``predict`` runs the task network instead: theta' baked into a folded copy (:func:`adapted_network`).
        """
        return call(self, state, query_x)

    def episode_loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Query loss after the meta-training inner loop (``inner_steps``, graph of ``meta_order``)."""
        cfg = self.config
        state = self.inner_adapt(
            episode.support_x, episode.support_y, episode.n_way, cfg.inner_steps, cfg.inner_lr, self.meta_order
        )
        outputs = self.score(state, episode.query_x)
        return self.task_loss(outputs, episode.query_y), outputs

    def can_vmap(self, episodes: Sequence[Episode]) -> bool:
        """Tasks batch with ``vmap`` for a BN-free regressor whose tasks share shapes; else a loop.

        Batch norm is excluded because a task's support statistics are recorded into a dict during
        the forward (:func:`call`'s ``stats``), which ``vmap`` cannot batch.
        """
        shapes = {(e.support_x.shape, e.query_x.shape) for e in episodes}
        has_bn = any(isinstance(m, TaskBatchNorm) for m in self.modules())
        return self.vmap_tasks and not self.kind.classifies and not has_bn and len(shapes) == 1

    def meta_gradients(self, episodes: Sequence[Episode], metrics: StepMetrics) -> None:
        """The mean query loss over a meta-batch (MAML Algorithm 1/2), its tasks batched with vmap when they can."""
        if not self.can_vmap(episodes):
            super().meta_gradients(episodes, metrics)
            return
        fields = ("support_x", "support_y", "query_x", "query_y")
        tasks = tuple(torch.stack([getattr(e, f) for e in episodes]) for f in fields)

        def query_loss(theta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor) -> Tensor:
            """One task's L^query(f_theta'), theta' by the same inner loop as the task loop's, under vmap."""

            def support_loss(params: Params) -> Tensor:
                return self.task_loss(call(self, params, support_x), support_y)

            steps, lr = self.config.inner_steps, self.config.inner_lr
            adapted = inner_loop(support_loss, theta, steps, lr, self.meta_order, gradient=vmappable_gradient)
            return self.task_loss(call(self, adapted, query_x), query_y)

        losses = torch.func.vmap(query_loss, in_dims=(None, 0, 0, 0, 0))(self.initial_params(1), *tasks)
        loss = losses.mean()
        loss.backward()
        metrics.add(loss, tasks=len(episodes))

    def export_module(self, state: TaskState) -> nn.Module:
        """A plain copy of the network with theta' (and the support BN statistics) baked in, folded."""
        return adapted_network(self, state)


class AdaptedNetwork(nn.Module):
    """backbone + head: a traceable module for ONNX export."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class FrozenBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A task's batch norm with its statistics baked in: one ``batch_norm`` op, any input rank.

    With the support statistics it normalises by them as constants; without (``bn="transductive"``)
    it keeps no running statistics and so uses each batch's own, as :class:`TaskBatchNorm` does. Unlike
    ``TaskBatchNorm`` it has no branch on its buffers, so the TorchScript tracer exports it cleanly.
    """

    def _check_input_dim(self, input: Tensor) -> None:  # the task's layer took this input already
        pass


def frozen_batchnorm(layer: TaskBatchNorm, state: TaskState) -> FrozenBatchNorm:
    mean, var = state.get(f"{layer.stat_name}.mean"), state.get(f"{layer.stat_name}.var")
    frozen = FrozenBatchNorm(len(layer.weight), eps=layer.eps, track_running_stats=mean is not None)
    if mean is not None:
        frozen.running_mean, frozen.running_var = mean.detach().clone(), var.detach().clone()
    return frozen


def adapted_network(learner: GradientLearner, state: TaskState) -> AdaptedNetwork:
    """theta' (and the task's batch-norm statistics) baked into a plain copy of the network, in eval mode.

    Where the statistics are the support's, each batch norm is folded into the convolution before it
    (:mod:`fewshot_sdk.models.folding`); in ``bn="transductive"`` mode it stays, normalising each batch.

    The copy is a :func:`shadow_module` tree with every parameter replaced, not a deep copy of the
    learner's: copying theta only to overwrite it with theta' would double the bake's work.
    """
    network = AdaptedNetwork(shadow_module(learner.backbone), shadow_module(learner.head))
    for module in network.modules():  # its own hook tables too: a hook put on the copy stays off the learner
        module.__dict__.update({k: type(v)(v) for k, v in module.__dict__.items() if isinstance(v, (dict, set))})
    for name, module in list(network.named_modules()):
        if isinstance(module, TaskBatchNorm):
            path, _, leaf = name.rpartition(".")
            setattr(network.get_submodule(path), leaf, frozen_batchnorm(module, state))
    for name, parameter in list(network.named_parameters()):
        tensor = state.get(name, parameter)  # every parameter is replaced: none stays the learner's live one
        path, _, leaf = name.rpartition(".")
        setattr(network.get_submodule(path), leaf, nn.Parameter(tensor.detach().clone(), requires_grad=False))
    fold_batchnorm_(network.eval())  # with the support statistics (benchmarks/results/batchnorm_folding_cpu.md)
    return network
