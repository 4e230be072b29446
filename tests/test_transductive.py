"""Transductive prediction: prototypes refined by the query batch (support-centred soft k-means), only through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.methods.transductive_prototypes import SHARPNESS, STEPS, refine

PLANTVILLAGE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "plantvillage_apple"


def reference_refine(prototypes, shots, queries):
    """Centring on the support's mean, then soft k-means with the support as fixed members, query by query in
    float64."""

    def unit(v):
        return v / v.norm()

    prototypes, queries = prototypes.double(), queries.double()
    centre = sum(int(k) * p for k, p in zip(shots, prototypes, strict=True)) / int(shots.sum())
    support = [unit(p - centre) for p in prototypes]
    centred = [unit(q - centre) for q in queries]
    refined = list(support)
    for _ in range(STEPS):
        assignments = []
        for query in centred:
            scores = torch.stack([torch.exp(SHARPNESS * torch.dot(query, unit(r))) for r in refined])
            assignments.append(scores / scores.sum())
        refined = [
            (int(k) * s + sum(a[n] * q for a, q in zip(assignments, centred, strict=True)))
            / (int(k) + sum(a[n] for a in assignments))
            for n, (k, s) in enumerate(zip(shots, support, strict=True))
        ]
    return torch.stack(refined), torch.stack(centred)


@pytest.mark.parametrize(("n_way", "batch", "dim"), [(3, 7, 5), (5, 31, 17)])
def test_refinement_matches_a_float64_reference(n_way, batch, dim):
    generator = torch.Generator().manual_seed(n_way)
    prototypes = torch.randn(n_way, dim, generator=generator)
    shots = torch.randint(1, 6, (n_way,), generator=generator)
    queries = prototypes[torch.arange(batch) % n_way] + 0.7 * torch.randn(batch, dim, generator=generator)
    got, centred = refine(prototypes, shots, queries)
    want, want_centred = reference_refine(prototypes, shots, queries)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(centred.double(), want_centred, rtol=1e-6, atol=1e-6)


def test_moving_every_feature_by_one_vector_changes_nothing():
    """The support's mean is the origin of the refinement, so a shift common to all features cancels."""
    generator = torch.Generator().manual_seed(0)
    prototypes, queries = torch.randn(4, 9, generator=generator), torch.randn(13, 9, generator=generator)
    shots, shift = torch.tensor([1, 2, 3, 5]), 5 * torch.randn(9, generator=generator)
    got, centred = refine(prototypes + shift, shots, queries + shift)
    want, want_centred = refine(prototypes, shots, queries)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(centred, want_centred, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not PLANTVILLAGE.is_dir(), reason="needs ../shared/data/plantvillage_apple beside the repo")
def test_on_leaves_the_photo_model_never_saw_the_batch_helps_balanced_or_not():
    """4-way 1-shot episodes of apple leaves (a far development domain): 16 photos a class, so 1 shot and up to
    15 queries; the imbalanced batches keep a random 1 to 15 queries a class (BD-CSPN lost points on those)."""
    from fewshot_sdk.data.episodes import EpisodeSampler
    from fewshot_sdk.data.labelled import LabelledImages

    learner = fs.load("protonet-photos")
    folders = sorted(path for path in PLANTVILLAGE.iterdir() if path.is_dir())
    photos = {folder.name: sorted(folder.glob("*.jpg"))[:16] for folder in folders}
    dataset = LabelledImages.from_mapping(photos, learner.preprocessor)
    with torch.inference_mode():
        embedded = learner.embed(dataset.images)
    sampler = EpisodeSampler(LabelledImages(embedded, dataset.labels, dataset.class_names), 4, 1, 15, seed=0)
    generator = torch.Generator().manual_seed(1)
    gains = {"balanced": [], "imbalanced": []}
    for _ in range(20):
        episode = sampler.sample()
        prototypes, shots = episode.support_x, torch.ones(4, dtype=torch.long)
        keep = torch.cat(
            [
                (episode.query_y == c).nonzero().flatten()[: int(torch.randint(1, 16, (), generator=generator))]
                for c in range(4)
            ]
        )
        for batch, chosen in (("balanced", slice(None)), ("imbalanced", keep)):
            queries, truth = episode.query_x[chosen], episode.query_y[chosen]
            inductive = torch.cdist(queries, prototypes).argmin(1)
            refined, centred = refine(prototypes, shots, queries)
            transductive = torch.cdist(centred, refined).argmin(1)
            gains[batch].append(
                100 * float((transductive == truth).float().mean() - (inductive == truth).float().mean())
            )
    mean_gain = {batch: sum(values) / len(values) for batch, values in gains.items()}
    assert mean_gain["balanced"] > 5 and mean_gain["imbalanced"] > 2, mean_gain


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
