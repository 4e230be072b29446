"""The one meta-training loop: objectives, the step-metrics accumulator, explicit outer updates."""

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.step_metrics import StepMetrics
from fewshot_sdk.train.loop import TrainConfig, meta_train, run_training
from fewshot_sdk.train.recipes import warm_start
from fewshot_sdk.train.regression import train_sinusoid

TINY = TrainConfig(
    episodes=3, n_way=3, k_shot=1, q_queries=2, val_every=3, val_episodes=2, val_n_way=3, val_q_queries=2
)


def test_step_metrics_average_over_tasks_and_count_accuracy_only_for_class_labels():
    metrics = StepMetrics()
    metrics.add(torch.tensor(1.0), torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
    metrics.add(torch.tensor(4.0), tasks=2)  # a batched loss over two tasks, no logits
    assert metrics.summary() == pytest.approx({"loss": 3.0, "accuracy": 0.5})
    regression = StepMetrics()
    regression.add(torch.tensor(2.0), torch.randn(3, 1), torch.randn(3, 1))
    assert regression.summary() == {"loss": 2.0}


def test_classification_and_sinusoid_runs_share_the_loop_and_report_their_own_figure(omniglot_splits):
    torch.manual_seed(0)
    result = meta_train(fs.create("protonet"), omniglot_splits.train, omniglot_splits.val, TINY)
    assert result.metric == "accuracy" and result.best_value == result.history[-1]["val_accuracy"]
    assert {"loss", "train_accuracy", "val_accuracy", "val_ci95"} <= set(result.history[-1])

    regressor = fs.create("maml", task="regression", backbone={"name": "mlp", "layers": [8]})
    config = TrainConfig(episodes=4, k_shot=5, q_queries=5, val_every=2, val_episodes=5)
    result = train_sinusoid(regressor, config)
    records = result.history
    assert result.metric == "mse" and result.best_value == min(r["val_mse"] for r in records)
    assert all("val_accuracy" not in r and "train_accuracy" not in r and r["val_mse"] > 0 for r in records)
    assert regressor.provenance.training.extra["best_val_mse"] == result.best_value


class CountingObjective:
    """A sinusoid-free objective: lower is better, and the scores are chosen by the test."""

    metric = "loss"
    higher_is_better = False

    def __init__(self, scores):
        self.scores = iter(scores)

    def sample(self) -> Episode:
        return Episode(torch.randn(3, 4), torch.arange(3), torch.randn(3, 4), torch.arange(3), 3)

    def validate(self, learner):
        return next(self.scores), 0.0


def test_the_loop_keeps_the_lowest_figure_when_lower_is_better():
    torch.manual_seed(0)
    learner = fs.create("maml", backbone={"name": "mlp", "in_features": 4, "layers": [5]}, n_way=3)
    config = TrainConfig(episodes=3, val_every=1)
    kept = []
    result = run_training(learner, CountingObjective([0.5, 0.2, 0.9]), config, on_new_best=kept.append)
    assert (result.best_episode, result.best_value, len(kept)) == (2, 0.2, 2)


def reptile(**settings) -> fs.Learner:
    torch.manual_seed(0)
    return fs.create("reptile", backbone={"hidden": 8}, n_way=3, inner_steps=1, **settings)


def test_reptile_takes_no_optimiser_and_saves_its_meta_iteration_so_init_continues_its_schedule(
    omniglot_splits, tmp_path
):
    learner = reptile(anneal_episodes=10, outer_lr=0.5)
    config = TINY.model_copy(update={"lr": 1e-3})
    meta_train(learner, omniglot_splits.train, omniglot_splits.val, config)
    assert int(learner.meta_iteration) == 3 and learner.epsilon() == pytest.approx(0.5 * 7 / 10)
    learner.save(tmp_path / "r")
    assert int(fs.load(tmp_path / "r").meta_iteration) == 3
    continued = warm_start(tmp_path / "r")
    assert continued.epsilon() == pytest.approx(learner.epsilon())


def test_reptile_with_its_schedule_spent_refuses_to_train_and_says_which_setting_to_raise(omniglot_splits):
    learner = reptile(anneal_episodes=2)
    learner.meta_iteration.fill_(2)
    with pytest.raises(InputError, match="anneal_episodes=5"):
        meta_train(learner, omniglot_splits.train, omniglot_splits.val, TINY)


def test_test_time_adaptation_keeps_no_graph_whatever_the_callers_grad_mode():
    learner = fs.create("maml", backbone={"hidden": 8}, n_way=3, test_steps=2).train()
    x, y = torch.randn(3, 1, 28, 28), torch.arange(3)
    with torch.enable_grad():
        state = learner.fit_task(x, y, 3)
        # nothing of the learner is differentiated through: every state tensor is a leaf of no graph
        assert all(t.grad_fn is None for t in state.values())
        trained = learner.inner_adapt(x, y, 3, 1, 0.4, learner.meta_order)
        assert all(g is not None for g in torch.autograd.grad(trained["head.weight"].sum(), [learner.head.weight]))


def test_a_validation_episode_the_model_cannot_take_fails_before_training(omniglot_splits):
    learner = reptile()
    with pytest.raises(InputError, match=r"--val-n-way 5 .*3-way head"):
        meta_train(learner, omniglot_splits.train, omniglot_splits.val, TINY.model_copy(update={"val_n_way": 5}))
    assert int(learner.meta_iteration) == 0
