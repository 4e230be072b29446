"""Classes added to or removed from an adapted task equal adapting on the resulting support set."""

from __future__ import annotations

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.errors import InputError
from fewshot_sdk.io.zoo import method_class, method_names

METHODS = sorted({method_class(name).method for name in method_names()})
GROWABLE = [m for m in METHODS if fs.create(m).task_layout() is not None]


def support(names: list[str], seed: int) -> fs.SupportSet:
    return fs.SupportSet.from_mapping(images(names, seed))


def images(names: list[str], seed: int, shots: int = 2) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shots * len(names), 1, 28, 28, generator=g)
    return {name: list(x[i * shots : (i + 1) * shots]) for i, name in enumerate(names)}


def test_the_methods_with_per_class_task_state_can_grow():
    assert set(GROWABLE) == {"matching", "protonet", "relation", "siamese"}


@pytest.mark.parametrize("method", GROWABLE)
def test_adding_classes_equals_adapting_on_the_union(method):
    torch.manual_seed(0)
    learner = fs.create(method)
    first, more, last = images(["a", "b", "c"], 1), images(["d", "e"], 2), images(["f"], 3)
    grown = learner.adapt(fs.SupportSet.from_mapping(first)).add_classes(fs.SupportSet.from_mapping(more))
    grown = grown.add_classes(last)  # one class, as a mapping
    direct = learner.adapt(fs.SupportSet.from_mapping({**first, **more, **last}))
    assert grown.class_names == direct.class_names == ("a", "b", "c", "d", "e", "f")
    queries = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    exact = method == "protonet"
    for name, tensor in direct.state.items():
        torch.testing.assert_close(grown.state[name], tensor, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)
    torch.testing.assert_close(grown.predict(queries).probs, direct.predict(queries).probs)


@pytest.mark.parametrize("method", GROWABLE)
def test_removing_classes_equals_adapting_without_them(method, tmp_path):
    torch.manual_seed(0)
    learner = fs.create(method)
    everything = images(["a", "b", "c", "d"], 4)
    kept = fs.SupportSet.from_mapping({k: v for k, v in everything.items() if k in ("a", "c")})
    smaller = learner.adapt(fs.SupportSet.from_mapping(everything)).remove_classes(["b", "d"])
    direct = learner.adapt(kept)
    assert smaller.class_names == ("a", "c")
    queries = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(smaller.predict(queries).probs, direct.predict(queries).probs)
    reloaded = fs.load_task(smaller.save(tmp_path / "task"))
    torch.testing.assert_close(reloaded.predict(queries).probs, direct.predict(queries).probs)


@pytest.mark.parametrize("method", sorted(set(METHODS) - set(GROWABLE)))
def test_methods_whose_state_depends_on_the_whole_support_refuse_and_say_to_re_adapt(method):
    learner = fs.create(method)
    task = learner.adapt(support(["a", "b"], 5))
    with pytest.raises(InputError, match="adapt again"):
        task.add_classes(support(["c", "d"], 6))
    with pytest.raises(InputError, match="adapt again"):
        task.remove_classes(["a"])


def test_bad_class_changes_are_one_line_errors():
    task = fs.create("protonet").adapt(support(["a", "b", "c"], 7))
    with pytest.raises(InputError, match=r"already has classes \['b'\]"):
        task.add_classes(support(["b", "z"], 8))
    with pytest.raises(InputError, match=r"no classes \['q'\]"):
        task.remove_classes(["q"])
    with pytest.raises(InputError, match="at least 2"):
        task.remove_classes(["a", "b"])
