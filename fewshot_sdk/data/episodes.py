"""N-way K-shot episodes: the unit of meta-training and of the evaluation protocol."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.errors import InputError


@dataclass(frozen=True)
class Episode:
    """One few-shot task. Labels are episode-local: 0..n_way-1, support ordered class by class."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    n_way: int

    def to(self, device: torch.device | str) -> Episode:
        tensors = (self.support_x, self.support_y, self.query_x, self.query_y)
        return Episode(*(t.to(device) for t in tensors), self.n_way)


class EpisodeSampler:
    """Draws reproducible N-way K-shot episodes with Q queries per class.

    The sampler owns its ``torch.Generator``: the same seed gives the same episodes
    whatever else consumes global randomness, which is what makes a reported
    accuracy reproducible.
    """

    def __init__(
        self,
        dataset: LabelledImages,
        n_way: int,
        k_shot: int,
        q_queries: int = 15,
        seed: int = 0,
        within_group: bool = False,
    ) -> None:
        """``within_group``: every episode draws its classes from one group, a class name's part before
        its first ``/`` (an Omniglot alphabet), as Lake's runs do; groups too small are never drawn."""
        if n_way < 2:
            raise InputError(f"n_way must be at least 2, got {n_way}")
        if k_shot < 1 or q_queries < 0:
            raise InputError(f"k_shot must be >= 1 and q_queries >= 0, got {k_shot} and {q_queries}")
        self._by_class = dataset.indices_by_class()
        per_class = k_shot + q_queries
        eligible = [c for c, idx in enumerate(self._by_class) if len(idx) >= per_class]
        if len(eligible) < n_way:
            raise InputError(
                f"a {n_way}-way episode with {k_shot} shots and {q_queries} queries needs {n_way} classes "
                f"with >= {per_class} images each; the dataset has {len(eligible)}"
            )
        groups = class_groups(dataset.class_names, eligible) if within_group else [eligible]
        self._groups = [g for g in groups if len(g) >= n_way]
        if not self._groups:
            largest = max(len(g) for g in groups)
            raise InputError(
                f"a {n_way}-way episode within one group needs a group of {n_way} classes with >= {per_class} "
                f"images each; the largest group has {largest}"
            )
        self.dataset = dataset
        self.n_way, self.k_shot, self.q_queries = n_way, k_shot, q_queries
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def sample(self) -> Episode:
        g = self._generator
        # one group (the whole dataset unless within_group), drawn only when there is a choice, so
        # without groups the episodes are those of every earlier release
        pick_group = len(self._groups) > 1
        group = self._groups[int(torch.randint(len(self._groups), (1,), generator=g)) if pick_group else 0]
        chosen = torch.randperm(len(group), generator=g)[: self.n_way].tolist()
        support, query = [], []
        for c in chosen:
            idx = self._by_class[group[c]]
            pick = idx[torch.randperm(len(idx), generator=g)[: self.k_shot + self.q_queries]]
            support.append(pick[: self.k_shot])
            query.append(pick[self.k_shot :])
        support_idx, query_idx = torch.cat(support), torch.cat(query)
        labels = torch.arange(self.n_way)
        return Episode(
            support_x=self.dataset.images[support_idx],
            support_y=labels.repeat_interleave(self.k_shot),
            query_x=self.dataset.images[query_idx],
            query_y=labels.repeat_interleave(self.q_queries),
            n_way=self.n_way,
        )

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()

    def episodes(self, count: int) -> list[Episode]:
        return [self.sample() for _ in range(count)]


def class_groups(class_names: Sequence[str], classes: Sequence[int]) -> list[list[int]]:
    """``classes`` grouped by the part of their name before the first ``/`` (order of first appearance)."""
    groups: dict[str, list[int]] = {}
    for c in classes:
        groups.setdefault(class_names[c].split("/", 1)[0], []).append(c)
    return list(groups.values())
