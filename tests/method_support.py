"""Helpers shared by the method tests (importable: ``pythonpath = tests``)."""

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.config import AccuracyResult
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
