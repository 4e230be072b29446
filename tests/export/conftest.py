"""Shared pieces of the export tests: a small real-Omniglot task per method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fewshot_sdk as fs
from fewshot_sdk.io.zoo import method_class


def canonical_methods() -> list[str]:
    """Every registered method once (aliases dropped), read at collection time."""
    return sorted({method_class(name).method for name in fs.available()["methods"]})


def at_resolution(images: torch.Tensor, learner: fs.Learner) -> torch.Tensor:
    """28x28 grey Omniglot tensors resized / channel-repeated to the learner's input shape."""
    channels, height, width = learner.preprocess_config.input_shape
    if images.shape[-2:] != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    return images.expand(-1, channels, -1, -1).contiguous() if channels != images.shape[1] else images


@pytest.fixture(scope="session")
def omniglot_task_data(omniglot_splits):
    """3-way 2-shot support and 37 queries from held-out characters (seeded)."""
    test = omniglot_splits.test
    generator = torch.Generator().manual_seed(7)
    by_class = test.indices_by_class()
    classes = torch.randperm(len(by_class), generator=generator)[:3].tolist()
    support_idx, labels = [], []
    for label, cls in enumerate(classes):
        chosen = by_class[cls][torch.randperm(len(by_class[cls]), generator=generator)[:2]]
        support_idx.extend(chosen.tolist())
        labels.extend([label, label])
    query_idx = torch.randperm(len(test), generator=generator)[:37]
    names = [test.class_names[c].replace("/", "-") for c in classes]
    return test.images[support_idx], torch.tensor(labels), test.images[query_idx], names
