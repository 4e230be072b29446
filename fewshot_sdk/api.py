"""The user-facing data types: what goes into ``adapt`` and what comes out of ``predict``.

A :class:`SupportSet` keeps what the user gave (paths, PIL images, arrays, or
model-ready tensors) and is turned into tensors only by a learner, because only
the learner knows its resolution, channels and normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fewshot_sdk.class_names import class_names_problem
from fewshot_sdk.data.folders import list_class_images, scan_class_folders
from fewshot_sdk.data.images import ImageLike, Preprocessor
from fewshot_sdk.data.task_kinds import KindName, task_kind
from fewshot_sdk.errors import InputError
from fewshot_sdk.finite import all_finite

TaskKind = KindName  # what a SupportSet and a saved task record: "classification" or "regression"
SupportItem = ImageLike | torch.Tensor
#: What ``predict`` takes: one image, a sequence of images or of [C, H, W] tensors, or a [B, C, H, W] tensor.
QueryLike = ImageLike | torch.Tensor | Sequence


@dataclass(frozen=True)
class SupportSet:
    """A handful of labelled examples per class.

    Build one with :meth:`from_folder`, :meth:`from_folders`, :meth:`from_mapping` or :meth:`from_tensors`.
    Tensors are taken as model-ready (``task.preprocess``'s output); other items are images for the learner.
    """

    class_names: tuple[str, ...]
    items: tuple[SupportItem, ...] = ()
    labels: tuple[int, ...] = ()
    tensors: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    task: TaskKind = "classification"
    sources: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_folder(cls, root: str | os.PathLike) -> SupportSet:
        """``root/<class name>/*.png``: one subfolder per class."""
        return cls.from_mapping(scan_class_folders(root))

    @classmethod
    def from_folders(cls, folders: Sequence[str | os.PathLike]) -> SupportSet:
        """One folder per class, each named after its class (the CLI's repeated ``--support``)."""
        classes: dict[str, list[Path]] = {}
        for folder in folders:
            name = Path(folder).resolve().name
            if name in classes:
                raise InputError(f"two support folders are both named {name!r}: class names must differ")
            classes[name] = list_class_images(folder)
        return cls.from_mapping(classes)

    @classmethod
    def from_mapping(cls, classes: Mapping[str, Sequence[SupportItem]], min_classes: int = 2) -> SupportSet:
        """``{class name: [paths, PIL images, arrays or [C, H, W] tensors]}``.

        ``min_classes=1`` builds the classes to add to an adapted task (``add_classes``), which may be one.
        """
        if not isinstance(classes, Mapping):
            raise InputError("from_mapping takes a dict {class name: [images]}")
        items: list[SupportItem] = []
        labels: list[int] = []
        for index, (name, examples) in enumerate(classes.items()):
            if isinstance(examples, (str, os.PathLike, torch.Tensor)) or not isinstance(examples, Sequence):
                examples = [examples]  # one example given bare
            if len(examples) == 0:
                raise InputError(f"class {name!r} has no examples")
            items.extend(examples)
            labels.extend([index] * len(examples))
        sources = tuple(str(item) for item in items if isinstance(item, (str, os.PathLike)))
        support = cls(tuple(str(n) for n in classes), tuple(items), tuple(labels), sources=sources)
        support._check_classes(min_classes)
        return support

    @classmethod
    def from_tensors(
        cls,
        x: torch.Tensor,
        y: torch.Tensor | Sequence[int] | Sequence[float],
        class_names: Sequence[str] | None = None,
        task: TaskKind = "classification",
    ) -> SupportSet:
        """Model-ready inputs ``x`` [N, ...] with labels ``y`` [N] (0..C-1), or targets for regression."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"x must be a torch.Tensor, got {type(x).__name__}")
        y = torch.as_tensor(y)
        if len(x) != len(y):
            raise InputError(f"x has {len(x)} examples but y has {len(y)} labels")
        if len(x) == 0:
            raise InputError("the support set is empty")
        if not all_finite(x):
            raise InputError("support tensor x contains NaN or infinite values")
        if not task_kind(task).classifies:
            task_kind(task).check_targets(y, len(x))
            return cls(("value",), tensors=x, targets=y, task=task)
        if y.is_floating_point() or y.ndim != 1:
            raise InputError("classification labels y must be a 1-d integer tensor (0..C-1)")
        present = torch.unique(y)
        n_classes = int(y.max()) + 1 if len(y) else 0
        if int(y.min()) < 0 or len(present) != n_classes:
            raise InputError(f"labels y must use every class index 0..{n_classes - 1}; found {present.tolist()}")
        names = tuple(str(n) for n in class_names) if class_names is not None else tuple(map(str, range(n_classes)))
        if len(names) != n_classes:
            raise InputError(f"{len(names)} class_names given for {n_classes} classes in y")
        support = cls(names, labels=tuple(y.tolist()), tensors=x)
        support._check_classes()
        return support

    def _check_classes(self, min_classes: int = 2) -> None:
        if len(self.class_names) < min_classes:
            only = f" ({self.class_names[0]!r})" if self.class_names else ""
            raise InputError(
                f"a support set needs at least 2 classes; got {len(self.class_names)}{only}. "
                "Add one folder (or mapping entry) per class"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise InputError(f"class names must be unique; got {list(self.class_names)}")
        problem = class_names_problem(self.class_names)
        if problem is not None:
            raise InputError(f"{problem}: rename that class (its folder or mapping key)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.tensors) if self.tensors is not None else len(self.items)

    def shots(self) -> dict[str, int]:
        counts = torch.bincount(torch.tensor(self.labels), minlength=self.num_classes).tolist()
        return dict(zip(self.class_names, counts, strict=True))

    def to_tensors(self, preprocessor: Preprocessor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` as the model consumes them: x [N, C, H, W] float32, y [N] long (or float targets)."""
        if not task_kind(self.task).classifies:
            assert self.tensors is not None and self.targets is not None
            return self.tensors.float(), self.targets.float()
        labels = torch.tensor(self.labels, dtype=torch.long)
        if self.tensors is not None:
            return preprocessor.check_batch(self.tensors, "support tensor x"), labels
        batch = []
        for item in self.items:
            if isinstance(item, torch.Tensor):
                batch.append(preprocessor.check_batch(item, "a support tensor")[0])
            else:
                batch.append(preprocessor([item])[0])
        return torch.stack(batch), labels


def query_form(query: QueryLike) -> torch.Tensor | list[ImageLike]:
    """A query as the model-ready tensor batch it claims to be, or as a list of images to preprocess.

    A tensor, or a sequence of tensors (stacked), is model-ready and still to be checked
    against the model's input shape; a path, PIL image or array is one image; any other
    sequence is a list of images. Every runtime (torch, onnxruntime) reads queries this way.
    """
    if isinstance(query, torch.Tensor):
        return query
    if isinstance(query, (str, bytes, os.PathLike, Image.Image, np.ndarray)):
        return [query]
    if isinstance(query, Sequence):
        if len(query) == 0:
            raise InputError("no query images given")
        if all(isinstance(item, torch.Tensor) for item in query):
            shapes = {tuple(item.shape) for item in query}
            if len(shapes) > 1:
                raise InputError(
                    f"query tensors have different shapes {sorted(shapes)}: give [C, H, W] tensors of one size"
                )
            return torch.stack(list(query))
        return list(query)
    raise InputError(
        f"cannot predict on a {type(query).__name__}: pass a path, a list of paths, PIL images, "
        "or a [B, C, H, W] tensor"
    )


@dataclass(frozen=True)
class Prediction:
    """What ``predict`` returns: per query, the class index, its name and every class's probability.

    ``novelty`` [B] says how unlike every support class each query is (larger: less alike).
    With ``predict(..., reject=...)``, ``threshold`` is set and ``class_names`` holds None for
    the queries whose novelty lies above it; ``indices`` and ``probs`` stay the closed-set answer.
    """

    indices: torch.Tensor
    probs: torch.Tensor
    classes: tuple[str, ...]
    logits: torch.Tensor | None = None
    values: torch.Tensor | None = None
    novelty: torch.Tensor | None = None
    threshold: float | None = None

    @property
    def rejected(self) -> torch.Tensor:
        """[B] bool: the queries answered "none of these" (all False without a threshold)."""
        if self.threshold is None or self.novelty is None:
            return torch.zeros(len(self.indices), dtype=torch.bool)
        return self.novelty > self.threshold

    @property
    def class_names(self) -> list[str | None]:
        rejected = self.rejected.tolist()
        return [None if out else self.classes[i] for i, out in zip(self.indices.tolist(), rejected, strict=True)]

    @property
    def confidence(self) -> torch.Tensor:
        """The probability of each predicted class."""
        return self.probs.gather(1, self.indices.unsqueeze(1)).squeeze(1)

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        """For each query, the k most probable classes with their probabilities (k above the class count: all)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"top_k takes a whole number k >= 1, got {k!r}")
        k = min(k, len(self.classes))
        values, indices = self.probs.topk(k, dim=1)
        return [
            [(self.classes[i], float(p)) for i, p in zip(row_i, row_p, strict=True)]
            for row_i, row_p in zip(indices.tolist(), values.tolist(), strict=True)
        ]

    def __len__(self) -> int:
        return len(self.indices) if self.values is None else len(self.values)
