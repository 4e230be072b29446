"""Helpers shared by the method tests (importable: ``pythonpath = tests``)."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.config import AccuracyResult
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.omniglot import OmniglotSplits
from fewshot_sdk.train.evaluate import evaluate_episodes
from fewshot_sdk.train.loop import TrainConfig, meta_train


def fixed_val_accuracy(learner: fs.Learner, splits: OmniglotSplits, episodes: int) -> AccuracyResult:
    """5-way 1-shot accuracy on the same seeded validation episodes every call, so two calls compare."""
    return evaluate_episodes(learner, splits.val, 5, 1, 5, episodes=episodes, seed=3, split="val")


def accuracy_before_and_after_training(
    learner: fs.Learner, splits: OmniglotSplits, config: TrainConfig, episodes: int
) -> tuple[AccuracyResult, AccuracyResult]:
    """Meta-train on real glyphs and score the same validation episodes before and after."""
    before = fixed_val_accuracy(learner, splits, episodes)
    meta_train(learner, splits.train, splits.val, config)
    return before, fixed_val_accuracy(learner, splits, episodes)


def assert_refuses_bad_support(learner: fs.Learner) -> None:
    """The support checks every metric method shares (``_metric_common.check_support``), on both paths."""
    with pytest.raises(fs.InputError, match="at least 2 classes"):
        learner.adapt(fs.SupportSet.from_tensors(torch.randn(3, 1, 28, 28), torch.tensor([0, 0, 0])))
    with pytest.raises(fs.InputError, match="3 examples but y has 2"):
        fs.SupportSet.from_tensors(torch.randn(3, 1, 28, 28), torch.tensor([0, 1]))
    with pytest.raises(fs.InputError, match="one label per image"):
        learner.adapt_tensors(torch.randn(3, 1, 28, 28), torch.tensor([0, 1]), 2)
    with pytest.raises(fs.InputError, match=r"classes \[2\] have no support"):
        learner.adapt_tensors(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]), 3)


def random_task(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 3-way support set of 7 random 28x28 images (uneven shots) and 5 queries."""
    torch.manual_seed(seed)
    x = torch.randn(7, 1, 28, 28, dtype=dtype)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    q = torch.randn(5, 1, 28, 28, dtype=dtype)
    return x, y, q


def assert_sampler_episode_adapts_and_predicts(learner: fs.Learner, splits: OmniglotSplits) -> None:
    """A 5-way 2-shot episode from the training sampler goes through the public adapt/predict API."""
    episode = EpisodeSampler(splits.test, 5, 2, 3, seed=0).sample()
    support = fs.SupportSet.from_tensors(episode.support_x, episode.support_y)
    prediction = learner.adapt(support).predict(episode.query_x)
    assert prediction.indices.shape == (15,) and prediction.probs.shape == (15, 5)


@contextmanager
def leaves_unchanged(learner: fs.Learner) -> Iterator[None]:
    """Asserts that the block leaves every tensor of ``learner`` and of its inference twin bitwise as it was."""
    modules = (learner, learner.frozen_or_self())
    before = [{name: tensor.clone() for name, tensor in module.state_dict().items()} for module in modules]
    yield
    for module, saved in zip(modules, before, strict=True):
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, saved[name]), name
