"""Open-set answers: novelty scores, the support-only "auto" threshold, and rejection through every path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.errors import InputError
from fewshot_sdk.io.zoo import method_class, method_names
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.task.open_set import choose_threshold, conformal_floor, shot_folds

METHODS = sorted({method_class(name).method for name in method_names()} - {"maml-sinusoid"})


def random_support(n_way: int, shots: int, seed: int) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_way * shots, 1, 28, 28, generator=g)
    return {f"c{c}": list(x[c * shots : (c + 1) * shots]) for c in range(n_way)}


def glyphs(characters, classes, first, count):
    """``count`` images of each character in ``classes``, from the ``first``-th drawer on."""
    return {
        characters.class_names[c]: list(characters.images[characters.labels == c][first : first + count])
        for c in classes
    }


# ----------------------------------------------------------------- calibration pieces
def test_folds_hold_out_every_multi_shot_example_once_and_never_a_class_alone():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2])  # 3 shots, 1 shot, 7 shots
    folds = list(shot_folds(labels, 3))
    assert len(folds) == 5
    held = torch.stack(folds).sum(0)
    assert held.tolist() == [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    for fold in folds:
        assert set(labels[~fold].tolist()) == {0, 1, 2}


def test_the_threshold_separates_known_from_unknown_and_keeps_most_known_scores():
    assert choose_threshold(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([5.0, 6.0])) == pytest.approx(3.5)
    # overlapping sets: the balanced threshold (between 3 and 4) would reject the known 4.5, so it is raised to
    # the conformal floor; four known scores are too few for the rank ceil(0.9 * 5) = 5, so the largest
    threshold = choose_threshold(torch.tensor([1.0, 2.0, 3.0, 4.5]), torch.tensor([4.0, 5.0, 6.0]))
    assert threshold == pytest.approx(4.5)
    threshold = choose_threshold(torch.tensor([1.0, 2.0, 3.0] * 20), torch.tensor([2.5, 5.0, 6.0]))
    assert threshold == pytest.approx(3.0)  # balanced: 2.25, which rejects a third of the known; floor: 3
    balanced = choose_threshold(torch.tensor([1.0, 2.0, 3.0] * 20), torch.tensor([2.5, 5.0, 6.0]), keep_known=None)
    assert balanced == pytest.approx(2.25)  # without the floor (what benchmarks compare it with)
    known, unknown = torch.tensor([1.0, 2.0, 3.0, 4.5]), torch.tensor([4.0, 5.0, 6.0])
    assert choose_threshold(known, unknown, keep_known=None) == pytest.approx(3.5)
    assert choose_threshold(torch.zeros(0), torch.tensor([3.0, 2.0])) == 2.0  # one shot: the nearest unknown
    with pytest.raises(InputError, match="more classes"):
        choose_threshold(torch.tensor([1.0]), torch.zeros(0))


@pytest.mark.parametrize("n", [9, 10, 25, 60])
def test_the_floor_keeps_the_promised_share_of_queries_like_the_held_out_ones(n):
    # n held-out known scores and one more query from the same distribution, 20000 times: the query lies at or
    # below the floor ceil(0.9 (n + 1)) / (n + 1) of the time (0.909 at n = 10), never under 0.9. The plain 0.9
    # quantile of the n scores keeps less than 0.9 at every n here.
    g = torch.Generator().manual_seed(n)
    scores = torch.randn(20000, n + 1, generator=g, dtype=torch.float64).exp()  # skewed, as distances are
    floors = torch.tensor([conformal_floor(row[:n], 0.9) for row in scores])
    kept = float((scores[:, n] <= floors).double().mean())
    rank = math.ceil(0.9 * (n + 1) - 1e-9)
    assert kept == pytest.approx(rank / (n + 1), abs=0.008)
    assert kept >= 0.9 - 0.006
    plain = torch.quantile(scores[:, :n], 0.9, dim=1)
    assert float((scores[:, n] <= plain).double().mean()) < 0.9


def test_the_floor_is_the_largest_score_when_too_few_and_ignores_their_order():
    assert conformal_floor(torch.tensor([3.0, 1.0, 2.0]), 0.9) == 3.0  # rank 4 of 3: the largest
    shuffled = torch.randperm(19, generator=torch.Generator().manual_seed(0)).double()  # 0 .. 18 in some order
    assert conformal_floor(shuffled, 0.9) == 17.0  # rank ceil(0.9 * 20) = 18
    assert conformal_floor(torch.arange(25.0).flip(0), 0.9) == 23.0  # rank ceil(23.4) = 24


def test_protonets_one_embedding_calibration_equals_adapting_per_fold():
    torch.manual_seed(0)
    learner = fs.create("protonet")
    x = torch.randn(13, 1, 28, 28)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
    fast = learner.held_out_novelty(x, y, 4)
    generic = Learner.held_out_novelty(learner, x, y, 4)
    for a, b in zip(fast, generic, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_auto_calibrates_on_the_support_alone(monkeypatch):
    torch.manual_seed(0)
    learner = fs.create("protonet")
    support = fs.SupportSet.from_mapping(random_support(4, 3, 1))
    task = learner.adapt(support)
    x, y = support.to_tensors(learner.preprocessor)
    seen = []
    original = type(learner).held_out_novelty
    monkeypatch.setattr(type(learner), "held_out_novelty", lambda self, *a: seen.append(a) or original(self, *a))
    first = task.predict(torch.randn(5, 1, 28, 28), reject="auto")
    second = task.predict(torch.randn(9, 1, 28, 28) * 3, reject="auto")
    assert len(seen) == 1  # calibrated once, on first use
    torch.testing.assert_close(seen[0][0], x)
    torch.testing.assert_close(seen[0][1], y)
    assert first.threshold == second.threshold == task.novelty_threshold == learner.novelty_threshold(x, y, 4)


# ----------------------------------------------------------------- novelty of every method
def test_protonet_novelty_is_the_squared_distance_to_the_nearest_prototype_float64():
    torch.manual_seed(0)
    learner = fs.create("protonet")
    task = learner.adapt(fs.SupportSet.from_mapping(random_support(3, 2, 2)))
    queries = torch.randn(7, 1, 28, 28)
    novelty = task.predict(queries).novelty
    with torch.no_grad():
        features = learner.embed(queries).double()
    distances = torch.cdist(features, task.state["prototypes"].double()) ** 2
    torch.testing.assert_close(novelty.double(), distances.min(1).values, rtol=1e-4, atol=1e-4)


def test_matching_novelty_is_minus_the_best_cosine_to_a_support_embedding_float64():
    torch.manual_seed(0)
    learner = fs.create("matching")
    task = learner.adapt(fs.SupportSet.from_mapping(random_support(3, 2, 3)))
    queries = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        q = learner.backbone(queries).double()
    s = task.state["support"].double()
    cosines = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(s, dim=1).t()
    torch.testing.assert_close(task.predict(queries).novelty.double(), -cosines.max(1).values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_scores_novelty_and_rejects_with_auto(method):
    torch.manual_seed(0)
    task = fs.create(method).adapt(fs.SupportSet.from_mapping(random_support(3, 2, 4)))
    queries = torch.randn(6, 1, 28, 28)
    closed = task.predict(queries)
    assert closed.novelty.shape == (6,) and bool(torch.isfinite(closed.novelty).all())
    assert closed.threshold is None and not closed.rejected.any()
    assert None not in closed.class_names
    opened = task.predict(queries, reject="auto")
    assert opened.threshold == task.novelty_threshold
    assert opened.class_names == [
        None if score > opened.threshold else name
        for name, score in zip(closed.class_names, closed.novelty.tolist(), strict=True)
    ]
    torch.testing.assert_close(opened.probs, closed.probs)  # rejection never changes the probabilities


def test_rejecting_everything_and_nothing_with_explicit_thresholds():
    task = fs.create("protonet").adapt(fs.SupportSet.from_mapping(random_support(3, 2, 5)))
    queries = torch.randn(4, 1, 28, 28)
    assert task.predict(queries, reject=-1.0).class_names == [None] * 4  # squared distances are >= 0
    assert None not in task.predict(queries, reject=1e30).class_names


# ----------------------------------------------------------------- real glyphs
def test_on_held_out_glyphs_outside_characters_are_more_novel_and_rejected_more(omniglot_splits):
    learner = fs.load("protonet-omniglot")
    test = omniglot_splits.test
    task = learner.adapt(fs.SupportSet.from_mapping(glyphs(test, range(5), 0, 5)))
    inside = [image for images in glyphs(test, range(5), 5, 10).values() for image in images]
    outside = [image for images in glyphs(test, range(5, 15), 0, 5).values() for image in images]
    known = task.predict(torch.stack(inside), reject="auto")
    unknown = task.predict(torch.stack(outside), reject="auto")
    assert float(unknown.novelty.median()) > float(known.novelty.median())
    assert float(unknown.rejected.float().mean()) > 0.5 > float(known.rejected.float().mean())


# ----------------------------------------------------------------- saved, grown, exported
def test_a_saved_task_keeps_its_threshold_without_its_support(tmp_path):
    task = fs.create("matching").adapt(fs.SupportSet.from_mapping(random_support(4, 2, 6)))
    reloaded = fs.load_task(task.save(tmp_path / "task"))
    assert reloaded.support is None and reloaded.novelty_threshold == task.novelty_threshold
    queries = torch.randn(6, 1, 28, 28)
    assert reloaded.predict(queries, reject="auto").class_names == task.predict(queries, reject="auto").class_names
    grown = reloaded.add_classes({"new": random_support(1, 2, 7)["c0"]})
    with pytest.raises(InputError, match="adapt it again on its support set"):
        grown.predict(queries, reject="auto")


def test_a_grown_task_calibrates_as_adapting_on_the_union():
    learner = fs.create("protonet")
    first, more = random_support(3, 3, 8), {"d": random_support(1, 3, 9)["c0"], "e": random_support(1, 3, 10)["c0"]}
    grown = learner.adapt(fs.SupportSet.from_mapping(first)).add_classes(more)
    direct = learner.adapt(fs.SupportSet.from_mapping({**first, **more}))
    assert grown.novelty_threshold == pytest.approx(direct.novelty_threshold, rel=1e-6)
    shrunk = direct.remove_classes(["c1", "d"])
    kept = learner.adapt(
        fs.SupportSet.from_mapping({k: v for k, v in {**first, **more}.items() if k in ("c0", "c2", "e")})
    )
    assert shrunk.novelty_threshold == pytest.approx(kept.novelty_threshold, rel=1e-6)


def test_exported_onnx_outputs_novelty_and_applies_the_recorded_threshold(tmp_path, examples_dir):
    from fewshot_sdk.export.runtime import OnnxClassifier

    task = fs.load("protonet-omniglot").adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    classifier = OnnxClassifier(task.export_onnx(tmp_path / "task.onnx"))
    assert classifier.metadata.novelty_threshold == pytest.approx(task.novelty_threshold)
    queries = sorted((examples_dir / "queries").glob("*.png")) + sorted((examples_dir / "photos" / "queries").glob("*"))
    with pytest.warns(fs.DomainWarning):
        expected = task.predict(queries, reject="auto")
    answer = classifier.classify(queries, reject="auto")
    np.testing.assert_allclose(answer.novelty, expected.novelty.numpy(), rtol=1e-4, atol=1e-3)
    assert answer.class_names == expected.class_names
    assert answer.class_names[:3] == [n.split("_")[0] + "_" + n.split("_")[1] for n in
                                      (q.name for q in queries[:3])]  # fmt: skip
    assert answer.class_names[3:] == [None] * 5  # photos are no character of the support
    assert classifier.classify(queries, reject=1e30).class_names[3:] != [None] * 5
    with pytest.raises(InputError, match="reject must be"):
        classifier.classify(queries, reject="often")


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", ["sometimes", float("nan"), float("inf"), True, [1.0]])
def test_a_bad_reject_is_refused_in_one_line(bad):
    task = fs.create("protonet").adapt(fs.SupportSet.from_mapping(random_support(2, 2, 12)))
    with pytest.raises(InputError, match="reject must be None, 'auto' or a finite"):
        task.predict(torch.randn(1, 1, 28, 28), reject=bad)


def test_auto_needs_a_class_to_hold_out_for_methods_that_adapt_to_two_classes_at_least():
    task = fs.create("relation").adapt(fs.SupportSet.from_mapping(random_support(2, 2, 13)))
    with pytest.raises(InputError, match="pass reject=<novelty threshold>"):
        task.predict(torch.randn(1, 1, 28, 28), reject="auto")
    # ProtoNet's prototypes need no second class: two classes calibrate
    protonet = fs.create("protonet").adapt(fs.SupportSet.from_mapping(random_support(2, 2, 13)))
    assert np.isfinite(protonet.novelty_threshold)
