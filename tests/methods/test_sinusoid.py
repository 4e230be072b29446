import math

import pytest
import torch
from typer.testing import CliRunner

import fewshot_sdk as fs
from fewshot_sdk.cli.app import app
from fewshot_sdk.data.sinusoid import SinusoidTasks
from fewshot_sdk.errors import InputError
from fewshot_sdk.train.loop import TrainConfig
from fewshot_sdk.train.regression import sinusoid_mse, train_sinusoid


def regressor(method: str = "maml", **settings) -> fs.Learner:
    torch.manual_seed(0)
    return fs.create(method, backbone="mlp", task="regression", inner_lr=0.01, **settings)


def test_tasks_follow_the_papers_distribution_and_are_seeded():
    sampler = SinusoidTasks(k_shot=5, q_queries=20, seed=7)
    for _ in range(50):
        amplitude, phase = sampler.sample_function()
        assert 0.1 <= amplitude <= 5.0 and 0.0 <= phase <= math.pi
    episode = SinusoidTasks(5, 20, seed=1).sample()
    assert episode.support_x.shape == (5, 1) and episode.query_y.shape == (20, 1) and episode.n_way == 1
    x, y = torch.cat([episode.support_x, episode.query_x]), torch.cat([episode.support_y, episode.query_y])
    assert x.min() >= -5 and x.max() <= 5
    # every point lies on one sinusoid A sin(x - phi): recover A, phi from two points and check the rest
    a_cos, a_sin = torch.linalg.lstsq(torch.cat([torch.sin(x), -torch.cos(x)], 1).double(), y.double()).solution
    torch.testing.assert_close(
        a_cos * torch.sin(x.double()) - a_sin * torch.cos(x.double()), y.double(), atol=1e-4, rtol=0
    )
    again = SinusoidTasks(5, 20, seed=1).sample()
    torch.testing.assert_close(again.query_x, episode.query_x)


def test_vmapped_meta_batch_gives_the_same_meta_gradient_as_the_task_loop():
    for first_order in (False, True):
        learner = regressor(first_order=first_order, inner_steps=2).double().train()
        episodes = [
            type(e)(e.support_x.double(), e.support_y.double(), e.query_x.double(), e.query_y.double(), 1)
            for e in SinusoidTasks(10, 10, seed=2).episodes(4)
        ]
        optimizer = torch.optim.SGD(learner.parameters(), lr=0.0)
        assert learner.can_vmap(episodes)
        learner.train_step(episodes, optimizer)
        batched = [p.grad.clone() for p in learner.parameters()]
        learner.vmap_tasks = False
        learner.train_step(episodes, optimizer)
        for a, p in zip(batched, learner.parameters(), strict=True):
            torch.testing.assert_close(a, p.grad)


def test_maml_learns_sinusoids_within_a_small_budget_and_predicts_values():
    learner = regressor(test_steps=10)
    untrained, _ = sinusoid_mse(learner, k_shot=5, steps=10, tasks=100, seed=5)
    config = TrainConfig(
        episodes=1000, n_way=2, k_shot=10, q_queries=10, meta_batch=10, val_every=1000, val_episodes=20
    )
    train_sinusoid(learner, config)
    trained, _ = sinusoid_mse(learner, k_shot=5, steps=10, tasks=100, seed=5)
    assert trained < 0.5 * untrained, (untrained, trained)

    episode = SinusoidTasks(5, 30, seed=9).sample()
    support = fs.SupportSet.from_tensors(episode.support_x, episode.support_y, task="regression")
    prediction = learner.adapt(support, steps=10).predict(episode.query_x)
    assert prediction.values.shape == (30, 1)
    assert learner.provenance.training.dataset.startswith("sinusoid")


def test_regression_input_errors_are_clear():
    learner = regressor()
    support = fs.SupportSet.from_tensors(torch.randn(5, 2), torch.randn(5), task="regression")
    with pytest.raises(InputError, match=r"shape \[N, 1\]"):
        learner.adapt(support)
    with pytest.raises(InputError, match="regression learner"):
        train_sinusoid(fs.create("maml", backbone={"hidden": 8}), TrainConfig(episodes=1))
    good = learner.adapt(fs.SupportSet.from_tensors(torch.randn(5, 1), torch.randn(5), task="regression"))
    with pytest.raises(InputError, match="floating-point"):
        good.predict([1, 2])


def test_cli_trains_and_evaluates_the_sinusoid_family(tmp_path):
    runner = CliRunner()
    out = tmp_path / "maml-sinusoid"
    trained = runner.invoke(
        app,
        [
            "train",
            "--method",
            "fomaml",
            "--data",
            "sinusoid",
            "--out",
            str(out),
            "--episodes",
            "30",
            "--k-shot",
            "5",
            "--q-queries",
            "5",
            "--meta-batch",
            "5",
            "--val-every",
            "30",
            "--val-episodes",
            "5",
            "--set",
            "inner_lr=0.01",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "best validation MSE" in trained.output
    evaluated = runner.invoke(
        app, ["evaluate", "--model", str(out), "--data", "sinusoid", "--episodes", "5", "--record"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "5-shot 10-step: MSE" in evaluated.output
    reloaded = fs.load(out)
    assert reloaded.config.task == "regression" and "sinusoid_mse" in reloaded.provenance.training.extra


def test_clustered_support_points_no_longer_diverge_at_ten_steps():
    """The task of the contract issue: plain SGD overshoots (support loss 0.12 -> 4.3 -> 4e10, MSE inf)."""
    learner = fs.load("maml-sinusoid")
    x = torch.tensor([-1.85, 2.20, -4.65, -4.64, -4.55]).reshape(-1, 1)
    y = 4.78 * torch.sin(x - 0.263)
    support = fs.SupportSet.from_tensors(x, y.reshape(-1), task="regression")
    queries = torch.linspace(-5, 5, 50).reshape(-1, 1)
    truth = 4.78 * torch.sin(queries.reshape(-1) - 0.263)
    errors = {}
    for steps in (1, 10):
        predicted = learner.adapt(support, steps=steps).predict(queries).values.reshape(-1)
        errors[steps] = float(((predicted - truth) ** 2).mean())
    assert all(torch.isfinite(torch.tensor(e)) for e in errors.values()), errors
    assert errors[10] < 2 * errors[1], errors  # more steps may not make it much worse, let alone infinite


def test_backtracking_never_lets_a_test_time_step_explode_the_support_loss():
    from fewshot_sdk.methods.inner_loop import inner_loop

    w = torch.tensor([3.0])
    loss_fn = lambda params: (10 * params["w"] ** 2).sum()  # noqa: E731 - lr 1 overshoots: plain SGD diverges
    plain = inner_loop(loss_fn, {"w": w}, steps=5, lr=1.0, order="none")
    guarded = inner_loop(loss_fn, {"w": w}, steps=5, lr=1.0, order="none", backtrack=True)
    with torch.no_grad():
        assert float(loss_fn(plain)) > 1e10
        assert float(loss_fn(guarded)) <= 2**5 * float(loss_fn({"w": w}))  # at most doubled per step, not 1e10


def test_a_non_finite_support_loss_at_test_time_is_an_adaptation_error():
    from fewshot_sdk.methods.inner_loop import inner_loop

    with pytest.raises(fs.AdaptationError, match="step 0"):
        inner_loop(lambda p: p["w"].sum() * float("nan"), {"w": torch.ones(2)}, steps=1, lr=0.1, order="none")
