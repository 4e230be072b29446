"""The open-set protocol of benchmarks/accuracy/open_set.py: AUROC, and episodes of support plus outside classes."""

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.train.evaluate import auroc, evaluate_open_set


def test_auroc_counts_ordered_pairs_and_half_the_ties():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5
    assert auroc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == pytest.approx(0.75)


def test_held_out_glyphs_outside_the_support_are_told_apart(omniglot_splits):
    figures = evaluate_open_set(fs.load("protonet-omniglot"), omniglot_splits.test, episodes=20)
    assert set(figures) == {
        "novelty_auroc", "max_softmax_auroc", "closed_accuracy", "known_rejected", "unknown_accepted", "open_accuracy",
    }  # fmt: skip
    assert all(0.0 <= mean <= 1.0 for mean, _ in figures.values())
    assert figures["novelty_auroc"][0] > 0.9
    assert figures["known_rejected"][0] < 0.2 and figures["unknown_accepted"][0] < 0.5
