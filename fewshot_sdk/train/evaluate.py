"""The evaluation protocol of the literature: mean accuracy over many episodes with a 95% CI.

N-way K-shot episodes with 15 queries per class, 600 or more of them, drawn with a fixed seed from classes the
learner never trained on; the interval is 1.96 * sample std / sqrt(episodes). Lake's one-shot challenge is scored
through the public ``adapt``/``predict`` path, exactly as a user would run it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from fewshot_sdk.api import SupportSet
from fewshot_sdk.config import AccuracyResult, LakeRunsResult
from fewshot_sdk.data.episodes import Episode, EpisodeSampler
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.data.omniglot import LakeRun
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.train.distributed import Ranks, gather_objects


def episode_accuracy(
    learner: Learner, episode: Episode, transductive: bool = False, options: dict[str, object] | None = None
) -> float:
    """Query accuracy of one episode, through the same fit_task/score path as ``adapt``/``predict``.

    ``transductive``: the queries are scored together by ``predict(..., transductive=True)``'s scorer.
    ``options``: ``adapt``'s (e.g. ``finetune``).
    """
    state = learner.adapt_tensors(episode.support_x, episode.support_y, episode.n_way, **(options or {}))
    with torch.inference_mode():
        queries = episode.query_x.to(learner.device)
        logits = learner.transductive_module(state)(queries)[0] if transductive else learner.score(state, queries)
    return float((logits.argmax(-1).cpu() == episode.query_y).float().mean())


@contextmanager
def in_eval_mode(learner: Learner) -> Iterator[Learner]:
    """The learner in eval mode inside the block, back in the mode it was in after it."""
    was_training = learner.training
    learner.eval()
    try:
        yield learner
    finally:
        learner.train(was_training)


@contextmanager
def embedded_once(learner: Learner, dataset: LabelledImages) -> Iterator[LabelledImages]:
    """The dataset as the method's scoring will see it: backbone outputs when they can be reused, else as is."""
    if not learner.task_independent_embedding:
        yield dataset
        return
    backbone = learner.backbone
    stages = len(backbone.stages)
    embedded = LabelledImages(backbone.stage_outputs(dataset.images, stages), dataset.labels, dataset.class_names)
    with backbone.starting_at(stages):
        yield embedded


def mean_ci95(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(variance / n)


def evaluate_episodes(
    learner: Learner,
    dataset: LabelledImages,
    n_way: int,
    k_shot: int,
    q_queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    split: str = "test",
    on_episode: Callable[[int], None] | None = None,
    within_group: bool = False,
    dataset_name: str | None = None,
    ranks: Ranks | None = None,
    transductive: bool = False,
    options: dict[str, object] | None = None,
) -> AccuracyResult:
    """Mean query accuracy ± 95% CI over ``episodes`` seeded episodes.

    A method whose backbone embeds images independently of the task has every image embedded once, not once per
    episode it appears in (a 20-way 5-shot protocol would otherwise embed each photo ~50 times); the episodes, and
    so the figures, are the same.

    ``ranks`` shards the episodes over the processes of a distributed run: every rank draws every episode (so each
    stays in step with the seeded sampler), scores episode i when i % world_size is its rank, and the per-episode
    accuracies are gathered in episode order, so the mean and CI equal the single-process figures exactly.

    A frozen learner (``fs.load``'s) adapts and scores on its inference twin, so the episodes run on the twin: the
    embed-once pass must feed the very backbone that scores.
    """
    ranks = ranks or Ranks()
    learner = learner.frozen_or_self()
    scored: list[tuple[int, float]] = []
    embedding = nullcontext(dataset) if options else embedded_once(learner, dataset)  # options may tune the network
    with in_eval_mode(learner), embedding as inputs:
        sampler = EpisodeSampler(inputs, n_way, k_shot, q_queries, seed=seed, within_group=within_group)
        for index in range(episodes):
            episode = sampler.sample()
            if index % ranks.world_size != ranks.rank:
                continue
            scored.append((index, episode_accuracy(learner, episode, transductive, options)))
            if on_episode is not None:
                on_episode(index)
    if ranks.distributed:
        scored = sorted(pair for part in gather_objects(scored) for pair in part)
    mean, ci = mean_ci95([accuracy for _, accuracy in scored])
    return AccuracyResult(
        n_way=n_way,
        k_shot=k_shot,
        q_queries=q_queries,
        episodes=episodes,
        accuracy=mean,
        ci95=ci,
        split=split,
        seed=seed,
        dataset=dataset_name,
        within_group=within_group,
        transductive=transductive,
        adapt_options=options or {},
    )


def evaluate_lake_runs(
    learner: Learner, runs: list[LakeRun], transductive: bool = False, options: dict[str, object] | None = None
) -> LakeRunsResult:
    """Lake et al.'s 20 within-alphabet 20-way 1-shot runs: accuracy over all test images.

    ``options`` go to every run's ``adapt`` (e.g. ``finetune``); ``transductive``: each run's 20 test images are
    predicted together, as ``predict(..., transductive=True)``.
    """
    errors = []
    for run in runs:
        support = SupportSet.from_mapping({name: [image] for name, image in run.training})
        task = learner.adapt(support, **(options or {}))
        prediction = task.predict([image for _, image in run.test], transductive=transductive)
        errors.append(sum(int(p != a) for p, a in zip(prediction.indices.tolist(), run.answers, strict=True)))
    total = sum(len(run.test) for run in runs)
    correct = total - sum(errors)
    return LakeRunsResult(
        runs=len(runs),
        test_images=total,
        correct=correct,
        accuracy=correct / total,
        per_run_errors=errors,
        transductive=transductive,
        adapt_options=options or {},
    )


def auroc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve of a score meant to be larger on ``positives``: P(pos > neg) + P(tie) / 2."""
    difference = positives.double()[:, None] - negatives.double()[None, :]
    return float(((difference > 0).double() + 0.5 * (difference == 0).double()).mean())


@dataclass(frozen=True)
class OpenSetEpisode:
    """One open-set episode's figures: novelty against the max-softmax baseline, and the "auto" threshold's answers."""

    novelty_auroc: float
    max_softmax_auroc: float
    closed_accuracy: float  # in-support queries, argmax only
    known_rejected: float  # in-support queries the threshold rejects (wrongly)
    unknown_accepted: float  # outside queries the threshold accepts (wrongly)
    open_accuracy: float  # in-support: accepted and right; outside: rejected; over all queries


def open_set_episode(learner: Learner, episode: Episode, n_way: int, outside_queries: int) -> OpenSetEpisode:
    """Scores one episode drawn with ``n_way`` support classes first and outside classes after them.

    The support is the first ``n_way`` classes' support examples. The queries are their queries plus the first
    ``outside_queries`` queries of every other class, which the task never saw. Calibration uses the support alone
    (``Learner.novelty_threshold``).
    """
    known = episode.support_y < n_way
    support_x, support_y = episode.support_x[known], episode.support_y[known]
    inside = episode.query_y < n_way
    per_class = int((episode.query_y == 0).sum())
    outside = (~inside) & (torch.arange(len(episode.query_y)) % per_class < outside_queries)
    queries = torch.cat([episode.query_x[inside], episode.query_x[outside]])
    labels = episode.query_y[inside]
    state = learner.adapt_tensors(support_x, support_y, n_way)
    threshold = learner.novelty_threshold(support_x, support_y, n_way)
    with torch.inference_mode():
        logits, novelty = learner.score_with_novelty(state, queries.to(learner.device))
        probs = learner.probabilities(logits).cpu()
    novelty = novelty.cpu()
    n_in = len(labels)
    rejected = novelty > threshold
    right = probs[:n_in].argmax(1) == labels
    max_softmax = probs.max(1).values
    return OpenSetEpisode(
        novelty_auroc=auroc(novelty[:n_in], novelty[n_in:]),
        max_softmax_auroc=auroc(-max_softmax[:n_in], -max_softmax[n_in:]),
        closed_accuracy=float(right.double().mean()),
        known_rejected=float(rejected[:n_in].double().mean()),
        unknown_accepted=float((~rejected[n_in:]).double().mean()),
        open_accuracy=float(torch.cat([right & ~rejected[:n_in], rejected[n_in:]]).double().mean()),
    )


def evaluate_open_set(
    learner: Learner,
    dataset: LabelledImages,
    n_way: int = 5,
    k_shot: int = 5,
    q_queries: int = 15,
    outside_classes: int = 5,
    outside_queries: int = 5,
    episodes: int = 600,
    seed: int = 0,
    on_episode: Callable[[int], None] | None = None,
) -> dict[str, tuple[float, float]]:
    """Mean ± 95% CI of every :class:`OpenSetEpisode` figure over seeded episodes of held-out classes.

    Each episode draws ``n_way + outside_classes`` distinct classes: the first ``n_way`` are the support, the others
    supply ``outside_queries`` queries each from no support class. A frozen learner's episodes run on its inference
    twin, as in :func:`evaluate_episodes`.
    """
    learner = learner.frozen_or_self()
    scored: list[OpenSetEpisode] = []
    with in_eval_mode(learner), embedded_once(learner, dataset) as inputs:
        sampler = EpisodeSampler(inputs, n_way + outside_classes, k_shot, q_queries, seed=seed)
        for index in range(episodes):
            scored.append(open_set_episode(learner, sampler.sample(), n_way, outside_queries))
            if on_episode is not None:
                on_episode(index)
    return {name: mean_ci95([getattr(s, name) for s in scored]) for name in OpenSetEpisode.__dataclass_fields__}
