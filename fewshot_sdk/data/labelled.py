"""An in-memory labelled image collection: the one dataset type episodes are drawn from.

Few-shot datasets are small (Omniglot at 28x28 is tens of MB), so every image is
preprocessed once and kept as one tensor; episode sampling is then pure indexing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fewshot_sdk.data.images import ImageLike, Preprocessor
from fewshot_sdk.errors import InputError


@dataclass(frozen=True)
class LabelledImages:
    """Model-ready images [N, C, H, W] (or cached backbone outputs [N, ...]), class indices [N], class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim < 2 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise InputError(
                "images must be [N, ...] (model-ready images or cached backbone outputs) and labels [N]; "
                f"got {tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )
        if len(self.labels) and int(self.labels.max()) >= len(self.class_names):
            raise InputError("a label is out of range of class_names")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_mapping(cls, classes: Mapping[str, Sequence[ImageLike]], preprocessor: Preprocessor) -> LabelledImages:
        names = tuple(classes)
        tensors, labels = [], []
        for index, name in enumerate(names):
            tensors.append(preprocessor(list(classes[name])))
            labels.append(torch.full((len(tensors[-1]),), index, dtype=torch.long))
        return cls(torch.cat(tensors), torch.cat(labels), names)

    def indices_by_class(self) -> list[torch.Tensor]:
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=self.num_classes).tolist()
        return list(torch.split(order, counts))

    def subset_classes(self, class_indices: Sequence[int]) -> LabelledImages:
        """Keep only some classes, renumbered 0..len-1 in the given order."""
        by_class = self.indices_by_class()
        images, labels = [], []
        for new_label, old in enumerate(class_indices):
            images.append(self.images[by_class[old]])
            labels.append(torch.full((len(by_class[old]),), new_label, dtype=torch.long))
        names = tuple(self.class_names[i] for i in class_indices)
        return LabelledImages(torch.cat(images), torch.cat(labels), names)

    def with_rotations(self, quarter_turns: Sequence[int] = (1, 2, 3)) -> LabelledImages:
        """Add each class rotated by k x 90 degrees as a new class (Omniglot's training augmentation)."""
        images, labels, names = [self.images], [self.labels], list(self.class_names)
        for turn_number, k in enumerate(quarter_turns, start=1):
            images.append(torch.rot90(self.images, k, dims=(2, 3)))
            labels.append(self.labels + turn_number * self.num_classes)
            names.extend(f"{name}@rot{90 * k}" for name in self.class_names)
        return LabelledImages(torch.cat(images), torch.cat(labels), tuple(names))
