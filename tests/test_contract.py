"""The adapt/predict contract, checked for every registered method (a new method gets these for free)."""

from __future__ import annotations

import threading

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.registry import method_class, method_names

METHODS = sorted({method_class(name).method for name in method_names()})


def small_learner(method: str) -> fs.Learner:
    torch.manual_seed(0)
    return fs.create(method)


def support_sets(count: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Support sets of 3, 4 and 5 classes (2 shots) with 3 queries each, seeded."""
    generator = torch.Generator().manual_seed(1)
    tasks = []
    for index in range(count):
        ways = 3 + index % 3
        x = torch.randn(2 * ways, 1, 28, 28, generator=generator)
        tasks.append((x, torch.arange(ways).repeat(2), torch.randn(3, 1, 28, 28, generator=generator)))
    return tasks


@pytest.mark.parametrize("method", METHODS)
def test_one_learner_serves_many_threads_with_exactly_the_single_threaded_answers(method):
    learner = small_learner(method)
    tasks = support_sets(12)

    def solve(task: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y, q = task
        return learner.adapt(fs.SupportSet.from_tensors(x, y)).predict(q).probs

    expected = [solve(task) for task in tasks]
    results: list[torch.Tensor | None] = [None] * len(tasks)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(indices: list[int]) -> None:
        start.wait()
        try:
            for i in indices:
                results[i] = solve(tasks[i])
        except BaseException as exc:  # reported below, with the method's name
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=([i for i in range(len(tasks)) if i % 8 == t],)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"{method}: {errors[0]!r}"
    for got, want in zip(results, expected, strict=True):
        assert got is not None and torch.equal(got, want), method
