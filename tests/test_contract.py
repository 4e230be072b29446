"""The adapt/predict contract, checked for every registered method (a new method gets these for free)."""

from __future__ import annotations

import threading

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.io.zoo import method_class, method_names

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


@pytest.mark.parametrize("method", METHODS)
def test_options_and_support_are_validated_once_for_every_method(method):
    learner = small_learner(method)
    x, y, _ = support_sets(1)[0]
    with pytest.raises(fs.InputError, match=rf"{method} adapt options: unknown \['bogus'\]"):
        learner.adapt(fs.SupportSet.from_tensors(x, y), bogus=3)
    with pytest.raises(fs.InputError, match="must be torch tensors"):
        learner.adapt_tensors(x, [0, 1, 2, 0, 1, 2], 3)
    with pytest.raises(fs.InputError, match=r"classes \[3\] have no support example"):
        learner.adapt_tensors(x, y, 4)  # a class with no example would silently get a zero prototype
    with pytest.raises(fs.InputError, match="lie in 0..2"):
        learner.adapt_tensors(x, y + 1, 3)
    with pytest.raises(fs.InputError, match="NaN or infinite"):
        learner.adapt_tensors(torch.full_like(x, float("nan")), y, 3)
    with pytest.raises(fs.InputError, match="one label per image"):
        learner.adapt_tensors(x, y[:-1], 3)
    with pytest.raises(fs.InputError, match="integer class indices"):
        learner.adapt_tensors(x, y.float(), 3)
    fields = set(learner.Options.model_fields)
    assert fields in (set(), {"steps"}, {"steps", "lr"}, {"finetune"}), fields
    if "steps" in fields:
        with pytest.raises(fs.InputError, match="steps"):
            learner.adapt(fs.SupportSet.from_tensors(x, y), steps=-1)
    elif "finetune" in fields:
        with pytest.raises(fs.InputError, match="finetune"):
            learner.adapt(fs.SupportSet.from_tensors(x, y), finetune="always")
    else:
        with pytest.raises(fs.InputError, match="takes no options"):
            learner.adapt(fs.SupportSet.from_tensors(x, y), steps=3)


def test_loading_nothing_and_asking_for_no_classes_are_clear_errors():
    with pytest.raises(fs.CheckpointError, match="takes a bundled model name"):
        fs.load(None)
    task = small_learner("protonet").adapt(fs.SupportSet.from_tensors(*support_sets(1)[0][:2]))
    prediction = task.predict(torch.randn(2, 1, 28, 28))
    for k in (0, -1, 1.5):
        with pytest.raises(fs.InputError, match="k >= 1"):
            prediction.top_k(k)
    assert len(prediction.top_k(99)[0]) == 3
