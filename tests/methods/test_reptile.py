import pytest
import torch
import torch.nn.functional as F
from method_support import accuracy_before_and_after_training

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.inner_loop import AdamDirections, inner_loop
from fewshot_sdk.train.loop import TrainConfig


def mlp_reptile(**settings) -> fs.Learner:
    torch.manual_seed(0)
    backbone = {"name": "mlp", "in_features": 4, "layers": [6]}
    return fs.create("reptile", backbone=backbone, n_way=3, **settings).double()


def episode(seed: int) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        torch.randn(3, 4, generator=g, dtype=torch.float64),
        torch.arange(3),
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.arange(3).repeat(2),
        3,
    )


def manual_sgd(theta: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, steps: int, lr: float):
    for _ in range(steps):
        theta = [t.detach().requires_grad_() for t in theta]
        w1, b1, w2, b2 = theta
        loss = F.cross_entropy(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2), y)
        theta = [t - lr * g for t, g in zip(theta, torch.autograd.grad(loss, theta), strict=True)]
    return [t.detach() for t in theta]


def test_batched_outer_update_moves_theta_by_epsilon_times_the_mean_of_w_minus_theta():
    learner = mlp_reptile(inner_optimizer="sgd", inner_lr=0.1, inner_steps=3, inner_batch=100, outer_lr=0.5).train()
    learner.config.anneal_episodes = 4
    theta = [p.detach().clone() for p in learner.parameters()]
    episodes = [episode(1), episode(2)]
    targets = [
        manual_sgd(theta, torch.cat([e.support_x, e.query_x]), torch.cat([e.support_y, e.query_y]), 3, 0.1)
        for e in episodes
    ]
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.0)
    learner.train_step(episodes, optimizer)
    for p, t0, wa, wb in zip(learner.parameters(), theta, *targets, strict=True):
        expected = t0 + 0.5 * ((wa - t0) + (wb - t0)) / 2
        torch.testing.assert_close(p.detach(), expected)
    # epsilon anneals linearly: 0.5 * (1 - 1/4) on the second meta-iteration, 0 after the last
    assert learner.epsilon() == pytest.approx(0.375)
    learner.meta_iteration.fill_(4)
    before = [p.detach().clone() for p in learner.parameters()]
    learner.train_step(episodes, optimizer)
    for p, b in zip(learner.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b)


def test_the_outer_update_moves_the_parameters_version_counters():
    # An inference engine built from the weights (the onnxruntime graph, a batch-norm-folded copy) sees a change
    # only through them: an update written through .data would leave it answering with the old weights.
    learner = mlp_reptile(inner_optimizer="sgd", inner_lr=0.1, inner_steps=1, outer_lr=0.5).train()
    versions = [p._version for p in learner.parameters()]
    learner.train_step([episode(1)], torch.optim.SGD(learner.parameters(), lr=0.0))
    assert all(p._version > v for p, v in zip(learner.parameters(), versions, strict=True))


def test_inner_adam_matches_torch_adam():
    torch.manual_seed(1)
    w = torch.randn(5, dtype=torch.float64)
    target = torch.randn(5, dtype=torch.float64)
    result = inner_loop(
        lambda p: ((p["w"] - target) ** 4).sum(), {"w": w}, 4, 0.05, "none", directions=AdamDirections((0.0, 0.999))
    )
    reference = w.clone().requires_grad_()
    adam = torch.optim.Adam([reference], lr=0.05, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(4):
        adam.zero_grad()
        ((reference - target) ** 4).sum().backward()
        adam.step()
    torch.testing.assert_close(result["w"], reference.detach())


def test_test_time_adaptation_is_the_inner_optimiser_on_the_support_set():
    learner = mlp_reptile(inner_optimizer="sgd", inner_lr=0.2, test_steps=2, inner_batch=100)
    e = episode(3)
    state = learner.fit_task(e.support_x, e.support_y, 3)
    expected = manual_sgd([p.detach() for p in learner.parameters()], e.support_x, e.support_y, 2, 0.2)
    for (name, _), value in zip(learner.named_parameters(), expected, strict=True):
        torch.testing.assert_close(state[name], value)


def test_bad_options_are_clear_input_errors():
    learner = fs.create("reptile", backbone={"hidden": 8}, n_way=2)
    support = fs.SupportSet.from_tensors(torch.randn(2, 1, 28, 28), [0, 1])
    with pytest.raises(InputError, match="steps"):
        learner.adapt(support, steps="ten")
    with pytest.raises(InputError, match="2-way head.*3 classes"):
        learner.adapt(fs.SupportSet.from_tensors(torch.randn(3, 1, 28, 28), [0, 1, 2]))


def test_reptile_learns_on_real_omniglot_glyphs(omniglot_splits):
    torch.manual_seed(0)
    settings = {"inner_steps": 5, "test_steps": 3, "inner_lr": 0.01, "anneal_episodes": 60}
    learner = fs.create("reptile", backbone={"hidden": 32}, n_way=5, **settings)
    config = TrainConfig(episodes=60, n_way=5, k_shot=1, q_queries=5, meta_batch=2, val_every=60, val_episodes=10)
    before, after = accuracy_before_and_after_training(learner, omniglot_splits, config, episodes=30)
    assert after.accuracy > 0.65, after
    assert after.accuracy > before.accuracy + 0.1, (before, after)
