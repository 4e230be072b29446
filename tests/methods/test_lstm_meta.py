import math

import pytest
import torch
import torch.nn.functional as F
from method_support import accuracy_before_and_after_training

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.lstm_meta import lstm_update, preprocess

ALPHA = 0.2


def mlp_meta(**settings) -> fs.Learner:
    torch.manual_seed(0)
    backbone = {"name": "mlp", "in_features": 4, "layers": [6]}
    return fs.create("lstm-meta", backbone=backbone, n_way=3, **settings).double()


def data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2] * 2)


def constant_gates(forget: float, rate: float):
    def gates(inputs, theta, state, f_prev, i_prev):
        return torch.full_like(theta, forget), torch.full_like(theta, rate), state

    return gates


def manual_sgd(theta, x, y, steps):
    for _ in range(steps):
        w1, b1, w2, b2 = theta
        loss = F.cross_entropy(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2), y)
        grads = torch.autograd.grad(loss, theta)  # no create_graph: the learner's gradients are inputs only
        theta = [t - ALPHA * g for t, g in zip(theta, grads, strict=True)]
    return theta


def test_preprocessing_is_the_log_sign_map_of_andrychowicz_et_al():
    p = 10.0
    x = torch.tensor([2.0, -0.5, 1e-6, -3e-7, 0.0], dtype=torch.float64)
    out = preprocess(x, p)
    assert out.shape == (5, 2)
    torch.testing.assert_close(out[0], torch.tensor([math.log(2.0) / p, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out[1], torch.tensor([math.log(0.5) / p, -1.0], dtype=torch.float64))
    torch.testing.assert_close(out[2], torch.tensor([-1.0, 1e-6 * math.exp(p)], dtype=torch.float64))
    torch.testing.assert_close(out[4], torch.tensor([-1.0, 0.0], dtype=torch.float64))


def test_cell_update_with_forget_one_and_input_alpha_is_sgd():
    theta, grad = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    ones, alpha = torch.ones_like(theta), torch.full_like(theta, ALPHA)
    torch.testing.assert_close(lstm_update(theta, grad, ones, alpha), theta - ALPHA * grad)
    forget = torch.full_like(theta, 0.9)
    torch.testing.assert_close(lstm_update(theta, grad, forget, alpha), 0.9 * theta - ALPHA * grad)


def test_learner_trained_with_f_one_and_i_alpha_follows_sgd_and_meta_gradient_skips_second_order(monkeypatch):
    learner = mlp_meta().train()
    monkeypatch.setattr(learner.meta_learner, "gates", constant_gates(1.0, ALPHA))
    x, y = data()
    xq, yq = data(2)
    state = learner.inner_adapt(x, y, 3, 3, ALPHA, learner.meta_order)
    theta0 = [p for n, p in learner.named_parameters() if not n.startswith("meta_learner")]
    expected = manual_sgd(theta0, x, y, 3)
    names = [n for n, _ in learner.named_parameters() if not n.startswith("meta_learner")]
    for name, value in zip(names, expected, strict=True):
        torch.testing.assert_close(state[name], value)
    # gradient independence: d theta_T / d theta_0 = I, so the meta-gradient is the query gradient at theta_T
    loss = F.cross_entropy(learner.score(state, xq), yq)
    got = torch.autograd.grad(loss, theta0)
    at_t = [t.detach().requires_grad_() for t in expected]
    w1, b1, w2, b2 = at_t
    want = torch.autograd.grad(F.cross_entropy(F.linear(F.relu(F.linear(xq, w1, b1)), w2, b2), yq), at_t)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_query_loss_trains_the_meta_learner_gates_and_the_initialisation():
    learner = fs.create("lstm-meta", backbone={"hidden": 8}, n_way=3, inner_steps=2).train()
    episode = Episode(
        torch.randn(3, 1, 28, 28), torch.arange(3), torch.randn(6, 1, 28, 28), torch.arange(3).repeat(2), 3
    )
    loss, logits = learner.episode_loss(episode)
    assert logits.shape == (6, 3)
    loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert learner.meta_learner.rate.weight.grad.abs().sum() > 0
    assert learner.meta_learner.lstm.weight_ih.grad.abs().sum() > 0


def test_adapt_predicts_and_refuses_a_learning_rate():
    learner = fs.create("lstm-meta", backbone={"hidden": 8}, n_way=3)
    support = fs.SupportSet.from_tensors(torch.randn(3, 1, 28, 28), [0, 1, 2])
    prediction = learner.adapt(support, steps=2).predict(torch.randn(4, 1, 28, 28))
    assert prediction.probs.shape == (4, 3)
    torch.testing.assert_close(prediction.probs.sum(1), torch.ones(4))
    with pytest.raises(InputError, match="learns its own learning rates"):
        learner.adapt(support, lr=0.1)


def test_meta_learner_learns_on_real_omniglot_glyphs(omniglot_splits):
    from fewshot_sdk.train.loop import TrainConfig

    torch.manual_seed(0)
    learner = fs.create("lstm-meta", backbone={"hidden": 16}, n_way=5, inner_steps=5, test_steps=5)
    config = TrainConfig(
        episodes=30, n_way=5, k_shot=1, q_queries=5, meta_batch=2, lr=5e-3, val_every=30, val_episodes=5
    )
    before, after = accuracy_before_and_after_training(learner, omniglot_splits, config, episodes=20)
    assert after.accuracy > before.accuracy + 0.08, (before, after)
