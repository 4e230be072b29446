import pytest
import torch
import torch.nn.functional as F
from method_support import accuracy_before_and_after_training
from torch.func import functional_call

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.functional_call import call, has_tied_tensors
from fewshot_sdk.methods.task_batchnorm import TaskBatchNorm, batch_statistics
from fewshot_sdk.train.loop import TrainConfig

ALPHA = 0.3


def mlp_learner(method: str = "maml", **settings) -> fs.Learner:
    """A 3-class classifier on 4-d vectors: small enough to unroll MAML by hand."""
    torch.manual_seed(0)
    backbone = {"name": "mlp", "in_features": 4, "layers": [6, 5]}
    return fs.create(method, backbone=backbone, n_way=3, inner_lr=ALPHA, **settings).double()


def manual_forward(theta: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2, w3, b3 = theta
    return F.linear(F.relu(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)), w3, b3)


def task(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    xq, yq = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2] * 3)
    return xs, ys, xq, yq


def hand_unrolled(learner, xs, ys, xq, yq, second_order: bool):
    """theta_2 = theta_1 - a grad L(theta_1), theta_1 = theta_0 - a grad L(theta_0) (MAML eq. 1, twice)."""
    theta0 = [p for _, p in learner.named_parameters()]
    theta = theta0
    for _ in range(2):
        loss = F.cross_entropy(manual_forward(theta, xs), ys)
        grads = torch.autograd.grad(loss, theta, create_graph=second_order)
        theta = [t - ALPHA * g for t, g in zip(theta, grads, strict=True)]
    query_loss = F.cross_entropy(manual_forward(theta, xq), yq)
    return theta, query_loss, theta0


def test_two_inner_steps_and_second_order_meta_gradient_match_a_hand_unrolled_update_in_float64():
    learner = mlp_learner().train()
    xs, ys, xq, yq = task()
    theta2, query_loss, theta0 = hand_unrolled(learner, xs, ys, xq, yq, second_order=True)
    expected_grads = torch.autograd.grad(query_loss, theta0, retain_graph=True)

    state = learner.inner_adapt(xs, ys, 3, 2, ALPHA, learner.meta_order)
    names = [n for n, _ in learner.named_parameters()]
    for name, value in zip(names, theta2, strict=True):
        torch.testing.assert_close(state[name], value)
    loss = F.cross_entropy(learner.score(state, xq), yq)
    torch.testing.assert_close(loss, query_loss)
    grads = torch.autograd.grad(loss, list(learner.parameters()))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)
    # the second-order terms matter here: the first-order gradient is measurably different
    first_order = torch.autograd.grad(query_loss, theta2)
    assert max(float((a - b).abs().max()) for a, b in zip(first_order, expected_grads, strict=True)) > 1e-4


def test_fomaml_meta_gradient_is_the_query_gradient_at_the_adapted_parameters():
    learner = mlp_learner("fomaml").train()
    xs, ys, xq, yq = task(2)
    theta2, _, _ = hand_unrolled(learner, xs, ys, xq, yq, second_order=False)
    theta2 = [t.detach().requires_grad_() for t in theta2]
    expected = torch.autograd.grad(F.cross_entropy(manual_forward(theta2, xq), yq), theta2)

    state = learner.inner_adapt(xs, ys, 3, 2, ALPHA, learner.meta_order)
    grads = torch.autograd.grad(F.cross_entropy(learner.score(state, xq), yq), list(learner.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_adapt_never_mutates_the_learner_and_steps_lr_override_the_defaults():
    torch.manual_seed(3)
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=3, inner_lr=ALPHA, test_steps=3, bn="transductive")
    support = fs.SupportSet.from_tensors(torch.randn(6, 1, 28, 28), [0, 1, 2, 0, 1, 2])
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    zero = learner.adapt(support, steps=0)
    for name, value in learner.state_dict().items():
        torch.testing.assert_close(value, before[name])
        torch.testing.assert_close(zero.state[name], value)
    one, three = learner.adapt(support, steps=1), learner.adapt(support)
    big = learner.adapt(support, steps=1, lr=1.0)
    assert not torch.allclose(one.state["head.weight"], three.state["head.weight"])
    delta_small = one.state["head.weight"] - zero.state["head.weight"]
    delta_big = big.state["head.weight"] - zero.state["head.weight"]
    torch.testing.assert_close(delta_big, delta_small / ALPHA, rtol=1e-4, atol=1e-6)


def test_conv4_batchnorm_uses_support_statistics_so_a_prediction_is_per_example():
    torch.manual_seed(4)
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=5)
    x, y = torch.randn(5, 1, 28, 28), torch.arange(5)
    queries = torch.randn(6, 1, 28, 28)
    state = learner.adapt_tensors(x, y, 5)
    assert {"backbone.body.0.1.mean", "backbone.body.3.1.var"} <= set(state)
    with torch.no_grad():
        batch = learner.score(state, queries)
        single = torch.cat([learner.score(state, q[None]) for q in queries])
        torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)
        exported = learner.export_module(state)
        torch.testing.assert_close(exported(queries), batch, rtol=1e-4, atol=1e-5)
    # the paper's transductive setting: query batch statistics, no stored statistics
    learner.config.bn = "transductive"
    state = learner.adapt_tensors(x, y, 5)
    assert not any(name.endswith(".mean") for name in state)
    with torch.no_grad():
        assert not torch.allclose(learner.score(state, queries)[:2], learner.score(state, queries[:2]))


def test_the_baked_network_shares_nothing_the_learner_changes():
    # It is built from shadow copies of the learner's modules, not a deep copy: training the learner on, or
    # hooking the baked copy, must not reach across.
    torch.manual_seed(5)
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=3).eval()
    state = learner.adapt_tensors(torch.randn(3, 1, 28, 28), torch.arange(3), 3)
    queries = torch.randn(4, 1, 28, 28)
    network = learner.export_module(state)
    with torch.no_grad():
        before = network(queries)
        for parameter in learner.parameters():
            parameter.add_(1.0)
        torch.testing.assert_close(network(queries), before, rtol=0, atol=0)
    network.backbone.register_forward_hook(lambda *_: None)
    assert not learner.backbone._forward_hooks
    assert all(not p.requires_grad for p in network.parameters())


def test_the_baked_network_folds_the_support_statistics_into_its_convolutions():
    # Predict and export run it: with the support statistics fixed, each batch norm is an affine map per channel
    # that the convolution before it absorbs. float64 against the functional network with the statistics given.
    torch.manual_seed(6)
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=3).double().eval()
    x, y = torch.randn(3, 1, 28, 28, dtype=torch.float64), torch.arange(3)
    queries = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    state = learner.adapt_tensors(x, y, 3)
    network = learner.export_module(state)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in network.modules())
    with torch.no_grad():
        expected = call(learner, state, queries)
        torch.testing.assert_close(network(queries), expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(learner.score(state, queries), expected, rtol=1e-10, atol=1e-10)
    # transductive: each batch is normalised by its own statistics, which nothing can fold
    learner.config.bn = "transductive"
    state = learner.adapt_tensors(x, y, 3)
    frozen = [m for m in learner.export_module(state).modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(frozen) == 4 and all(m.running_mean is None for m in frozen)


def test_fewer_classes_slice_the_head_and_more_are_refused():
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=5)
    x = torch.randn(3, 1, 28, 28)
    task3 = learner.adapt(fs.SupportSet.from_tensors(x, [0, 1, 2]))
    assert task3.predict(torch.randn(2, 1, 28, 28)).probs.shape == (2, 3)
    six = fs.SupportSet.from_tensors(torch.randn(6, 1, 28, 28), list(range(6)))
    with pytest.raises(InputError, match="5-way head.*6 classes"):
        learner.adapt(six)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"lr": 0}, "lr"),
        ({"lr": "big"}, "lr"),
        ({"step": 2}, "unknown"),
    ],
)
def test_bad_adapt_options_are_clear_input_errors(options, message):
    learner = fs.create("fomaml", backbone={"hidden": 8}, n_way=2)
    support = fs.SupportSet.from_tensors(torch.randn(2, 1, 28, 28), [0, 1])
    with pytest.raises(InputError, match=message):
        learner.adapt(support, **options)


def test_meta_training_episode_loss_reaches_every_parameter():
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=3).train()
    episode = Episode(
        torch.randn(3, 1, 28, 28), torch.arange(3), torch.randn(6, 1, 28, 28), torch.arange(3).repeat(2), 3
    )
    loss, logits = learner.episode_loss(episode)
    assert logits.shape == (6, 3)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in learner.parameters())


def test_checkpoint_round_trip_keeps_adaptation(tmp_path):
    learner = fs.create("fomaml", backbone={"hidden": 8}, n_way=3, test_steps=2)
    support = fs.SupportSet.from_tensors(torch.randn(3, 1, 28, 28), [0, 1, 2])
    queries = torch.randn(4, 1, 28, 28)
    learner.save(tmp_path / "ckpt")
    again = fs.load(tmp_path / "ckpt")
    assert again.method == "fomaml" and again.config.test_steps == 2
    torch.testing.assert_close(
        again.adapt(support).predict(queries).probs, learner.adapt(support).predict(queries).probs
    )


def test_first_order_maml_learns_on_real_omniglot_glyphs(omniglot_splits):
    torch.manual_seed(0)
    learner = fs.create("fomaml", backbone={"hidden": 32}, n_way=5, inner_lr=0.4, inner_steps=1, test_steps=3)
    config = TrainConfig(
        episodes=60, n_way=5, k_shot=1, q_queries=5, meta_batch=2, val_every=60, val_episodes=10, seed=0
    )
    before, after = accuracy_before_and_after_training(learner, omniglot_splits, config, episodes=30)
    assert after.accuracy > 0.45, after
    assert after.accuracy > before.accuracy + 0.1, (before, after)


def test_adapted_task_exports_to_onnx_with_the_adapted_weights_baked_in(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(5)
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=5)
    task3 = learner.adapt(fs.SupportSet.from_tensors(torch.randn(3, 1, 28, 28), [0, 1, 2]), steps=2)
    session = ort.InferenceSession(str(task3.export_onnx(tmp_path / "task.onnx")))
    queries = torch.randn(4, 1, 28, 28)
    _logits, probs, _novelty = session.run(None, {session.get_inputs()[0].name: queries.numpy()})
    torch.testing.assert_close(torch.from_numpy(probs), task3.predict(queries).probs, rtol=1e-4, atol=1e-5)


def count_support_forwards(learner: fs.Learner, support: torch.Tensor) -> list[int]:
    """Wrap the learner's backbone so each call on the support batch is counted."""
    calls = [0]
    inner = learner.backbone.body.forward

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls[0] += x.shape[0] == support.shape[0]
        return inner(x)

    learner.backbone.body.forward = counted
    return calls


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_test_time_adaptation_runs_one_support_forward_per_step_plus_the_one_that_records_statistics(steps):
    torch.manual_seed(2)
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=5, inner_lr=0.01)
    x, y = torch.randn(5, 1, 28, 28), torch.arange(5)
    calls = count_support_forwards(learner, x)
    state = learner.adapt_tensors(x, y, 5, steps=steps)
    assert calls[0] == steps + 1
    # the statistics recorded on the way equal those of a separate forward at the adapted weights
    stats: dict[str, torch.Tensor] = {}
    params = {k: v for k, v in state.items() if not k.endswith((".mean", ".var"))}
    with torch.no_grad():
        call(learner, params, x, stats=stats)
    assert set(stats) == {k for k in state if k.endswith((".mean", ".var"))}
    for name, value in stats.items():
        torch.testing.assert_close(state[name], value)


def test_a_backtracked_step_keeps_the_statistics_of_the_weights_it_accepted():
    torch.manual_seed(3)
    # full steps explode, halved ones pass
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=5, inner_lr=200.0).double()
    x, y = torch.randn(5, 1, 28, 28, dtype=torch.float64), torch.arange(5)
    state = learner.adapt_tensors(x, y, 5, steps=2)
    params = {k: v for k, v in state.items() if not k.endswith((".mean", ".var"))}
    assert not torch.equal(params["head.weight"], learner.head.weight)
    stats: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        call(learner, params, x, stats=stats)
    for name, value in stats.items():
        torch.testing.assert_close(state[name], value)


def test_query_batch_norm_with_given_statistics_matches_the_written_out_formula_in_float64():
    torch.manual_seed(6)
    norm = TaskBatchNorm(4).double()
    with torch.no_grad():
        norm.weight.uniform_(-2, 2)
        norm.bias.normal_()
    x = torch.randn(7, 4, 3, 5, dtype=torch.float64)
    mean, var = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.1
    want = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + norm.eps) * norm.weight.view(
        1, -1, 1, 1
    ) + norm.bias.view(1, -1, 1, 1)
    with torch.no_grad():  # constants: the fused path
        fused = functional_call(norm, {"mean": mean, "var": var}, (x,))
    # differentiable statistics (meta-training): the written-out path, with gradients for them
    mean_g, var_g = mean.clone().requires_grad_(), var.clone().requires_grad_()
    written = functional_call(norm, {"mean": mean_g, "var": var_g}, (x,))
    torch.testing.assert_close(fused, want)
    torch.testing.assert_close(written, want)
    assert torch.autograd.grad(written.sum(), [mean_g])[0].abs().sum() > 0


@pytest.mark.parametrize("shape", [(7, 4, 3, 5), (6, 3), (2, 5, 9)])
def test_recorded_batch_statistics_and_their_gradients_match_var_mean_in_float64(shape):
    # The recorder's statistics come from a two-pass reduction with its own backward (var_mean is 5-10x
    # slower on CPU); second-order MAML differentiates through them, so the second derivatives are checked too.
    torch.manual_seed(7)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 5).requires_grad_()
    mean, var = batch_statistics(x)
    want_var, want_mean = torch.var_mean(x, [0, *range(2, x.ndim)], unbiased=False)
    torch.testing.assert_close((mean, var), (want_mean, want_var))
    assert torch.autograd.gradcheck(batch_statistics, (x,))
    assert torch.autograd.gradgradcheck(batch_statistics, (x,))
    (only_var,) = torch.autograd.grad(batch_statistics(x)[1].sum(), x)  # one output unused: its grad is None
    torch.testing.assert_close(only_var, torch.autograd.grad(want_var.sum(), x)[0])


@pytest.mark.parametrize(
    ("shape", "channels_last"), [((7, 4, 3, 5), False), ((7, 4, 3, 5), True), ((6, 3), False), ((2, 5, 9), False)]
)
def test_normalising_by_given_statistics_has_their_gradients_in_float64(shape, channels_last):
    # Meta-training normalises the queries by the support statistics under theta', which carry the meta-gradient:
    # batch norm's fused backward gives the input's, weight's and bias's gradients, the statistics' follow.
    torch.manual_seed(8)
    norm = TaskBatchNorm(shape[1]).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    mean = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    var = (torch.rand(shape[1], dtype=torch.float64) + 0.3).requires_grad_()
    view = (1, -1) + (1,) * (len(shape) - 2)
    expected = (x - mean.view(view)) / torch.sqrt(var.view(view) + norm.eps) * norm.weight.view(view)
    expected = expected + norm.bias.view(view)
    torch.testing.assert_close(norm.normalise(x, mean, var), expected)
    assert torch.autograd.gradcheck(norm.normalise, (x, mean, var))
    inputs = (x, mean, var, norm.weight, norm.bias)
    want = torch.autograd.grad(expected.square().sum(), inputs)
    torch.testing.assert_close(torch.autograd.grad(norm.normalise(x, mean, var).square().sum(), inputs), want)


def test_call_substitutes_a_tied_weight_under_both_its_names():
    # call() tells functional_call to skip its per-call tied-weight check when a network has none; a network
    # with a tied weight must still see the substituted tensor wherever the weight is used.
    tied = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    tied[1].weight = tied[0].weight
    plain = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    x, swapped = torch.randn(2, 3), torch.randn(3, 3)
    torch.testing.assert_close(call(tied, {"0.weight": swapped}, x), x @ swapped.T @ swapped.T)
    torch.testing.assert_close(call(plain, {"0.weight": swapped}, x), x @ swapped.T @ plain[1].weight.T)
    assert has_tied_tensors(tied) and not has_tied_tensors(plain)


def test_zero_head_starts_every_task_at_uniform_predictions_and_never_trains_the_stored_head():
    torch.manual_seed(7)
    learner = fs.create("fomaml", backbone={"hidden": 8}, n_way=5, head_init="zero", inner_steps=1).train()
    x, y = torch.randn(5, 1, 28, 28), torch.arange(5)
    state = learner.adapt_tensors(x, y, 5, steps=0)
    with torch.no_grad():
        torch.testing.assert_close(learner.score(state, x).softmax(-1), torch.full((5, 5), 0.2))
    episode = Episode(x, y, torch.randn(10, 1, 28, 28), torch.arange(5).repeat(2), 5)
    loss, _ = learner.episode_loss(episode)
    loss.backward()
    assert learner.head.weight.grad is None and learner.head.bias.grad is None
    assert learner.backbone.body[0][0].weight.grad.abs().sum() > 0
    # one step from zero is a prototype-like head: rows are alpha * mean of (onehot - 1/N) x features
    state = learner.adapt_tensors(x, y, 5, steps=1)
    assert state["head.weight"].abs().sum() > 0
