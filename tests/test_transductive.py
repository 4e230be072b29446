"""Transductive prediction: prototypes rectified by the query batch (BD-CSPN), and only through the batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fewshot_sdk as fs
from fewshot_sdk.methods.prototype_rectification import SHARPNESS, rectify


def reference_rectify(prototypes, shots, queries, sharpness=SHARPNESS):
    """Liu et al. 2020, eq. 7-9, written member by member in float64 (the prototype stands for its shots)."""
    prototypes, queries = prototypes.double(), queries.double()
    support_mean = sum(int(k) * p for k, p in zip(shots, prototypes, strict=True)) / int(shots.sum())
    shifted = queries + (support_mean - queries.mean(0))
    rectified = []
    for n, prototype in enumerate(prototypes):
        members, counts = [prototype], [int(shots[n])]
        for query in shifted:
            cosines = torch.stack([F.cosine_similarity(query, p, dim=0) for p in prototypes])
            if int(cosines.argmax()) == n:
                members.append(query)
                counts.append(1)
        scores = torch.stack([torch.exp(sharpness * F.cosine_similarity(m, prototype, dim=0)) for m in members])
        weights = torch.tensor(counts, dtype=torch.float64) * scores
        rectified.append(sum(w * m for w, m in zip(weights / weights.sum(), members, strict=True)))
    return torch.stack(rectified), shifted


@pytest.mark.parametrize(("n_way", "batch", "dim"), [(3, 7, 5), (5, 31, 17)])
def test_rectification_matches_a_float64_reference(n_way, batch, dim):
    generator = torch.Generator().manual_seed(n_way)
    prototypes = torch.randn(n_way, dim, generator=generator)
    shots = torch.randint(1, 6, (n_way,), generator=generator)
    queries = prototypes[torch.arange(batch) % n_way] + 0.7 * torch.randn(batch, dim, generator=generator)
    got, shifted = rectify(prototypes, shots, queries)
    want, want_shifted = reference_rectify(prototypes, shots, queries)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shifted.double(), want_shifted, rtol=1e-6, atol=1e-6)


def test_a_batch_that_is_the_prototypes_leaves_them_where_they_are():
    prototypes = torch.randn(4, 9, dtype=torch.float64)
    got, shifted = rectify(prototypes, torch.full((4,), 3), prototypes.clone())
    torch.testing.assert_close(got, prototypes)
    torch.testing.assert_close(shifted, prototypes)


@pytest.fixture(scope="module")
def photo_task(examples_dir):
    return fs.load("protonet-photos").adapt(fs.SupportSet.from_folder(examples_dir / "photos" / "support"))


@pytest.fixture(scope="module")
def photo_queries(examples_dir):
    return sorted((examples_dir / "photos" / "queries").iterdir())


def test_transductive_answers_depend_on_the_batch_and_on_nothing_else(photo_task, photo_queries):
    inductive = photo_task.predict(photo_queries)
    together = photo_task.predict(photo_queries, transductive=True)
    assert together.class_names == inductive.class_names == ["flamingo", "laptop", "panda", "pizza", "starfish"]
    assert not torch.allclose(together.probs, inductive.probs)  # the batch moved the prototypes
    torch.testing.assert_close(together.novelty, inductive.novelty)  # novelty (and reject) stay inductive
    shuffled = photo_task.predict(photo_queries[::-1], transductive=True)
    torch.testing.assert_close(shuffled.probs, together.probs.flip(0), rtol=1e-5, atol=1e-6)  # a set, not a sequence
    other_batch = photo_task.predict(photo_queries[:1] * 5, transductive=True)
    assert not torch.allclose(other_batch.probs[0], together.probs[0])  # same photo, another batch, another answer
    again = photo_task.predict(photo_queries, transductive=True)
    torch.testing.assert_close(again.probs, together.probs, rtol=0, atol=0)


def test_a_batch_too_small_to_stand_for_the_classes_is_answered_inductively(photo_task, photo_queries):
    for batch in (photo_queries[:1], photo_queries[:4]):  # fewer queries than the task's 5 classes
        torch.testing.assert_close(
            photo_task.predict(batch, transductive=True).probs, photo_task.predict(batch).probs, rtol=0, atol=0
        )


def test_a_saved_task_keeps_its_shots_and_an_older_one_counts_one_each(photo_task, photo_queries, tmp_path):
    assert photo_task.state["shots"].tolist() == [5, 5, 5, 5, 5]
    reloaded = fs.load_task(photo_task.save(tmp_path / "task"))
    torch.testing.assert_close(
        reloaded.predict(photo_queries, transductive=True).probs,
        photo_task.predict(photo_queries, transductive=True).probs,
    )
    older = fs.AdaptedModel(photo_task.learner, {"prototypes": photo_task.state["prototypes"]}, photo_task.class_names)
    equal_shots = older.predict(photo_queries, transductive=True)  # each prototype counted as one shot
    assert equal_shots.class_names == ["flamingo", "laptop", "panda", "pizza", "starfish"]


def test_methods_without_prototypes_and_bad_values_are_refused(examples_dir, photo_task, photo_queries):
    matching = fs.create("matching", backbone={"hidden": 8}).adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    with pytest.raises(fs.InputError, match="a matching task has none"):
        matching.predict(sorted((examples_dir / "queries").iterdir()), transductive=True)
    with pytest.raises(fs.InputError, match="transductive must be True or False"):
        photo_task.predict(photo_queries, transductive="yes")
