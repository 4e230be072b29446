"""Choosing the open-set rule for new domains: novelty scores and "auto" thresholds, on one set of episodes.

Every image of a domain is embedded once by the model (its task-independent embedding), then seeded
episodes are drawn: ``n_way`` support classes with ``--shots`` examples and 15 queries each, and 5
queries from each of the other classes (at most 5 of them). The support classes are half the domain's
classes where it has fewer than ten. For each novelty score, the per-episode AUROC (in-support vs outside
queries); for each threshold rule, calibrated on the support alone (held-out scores, as
``reject="auto"``), the fraction of in-support queries rejected and of outside queries accepted.

Scores (larger: more novel): ``prototype`` (squared distance to the nearest prototype, today's),
``max-softmax`` (minus the largest probability, Hendrycks & Gimpel 2017), ``nearest-shot`` (squared
distance to the nearest support example), ``energy`` (minus logsumexp of the logits, Liu et al. 2020),
``task-centred`` and ``class-scaled`` (distances after centring on the support's mean, or over each class's
own spread). Two read the whole query batch (transductive; the in-support and outside queries of an episode
are scored together): ``batch-centred`` (centred on the mean of the support and the batch, renormalised) and
``batch-clusters`` (soft k-means over the batch with the prototypes and ``n_way`` more centres started at the
queries farthest from them, a plain form of transductive open-set recognition (Boudiaf et al. 2023's OSLO
models the outliers instead): the distance to the nearest class centre less that to the nearest extra one).
Thresholds: ``balanced`` (best balanced accuracy between held-out known and unknown scores, without the floor)
and ``known-q<p>`` (the p-quantile of the held-out known scores, so about p of the known queries are kept;
the balanced one where the support has one shot and no known score), ``balanced-floor-q<p>`` (the
balanced one, raised to that quantile where it lies below it: ``reject="auto"``'s rule at q0.95 until the
next one) and ``conformal-floor-q<p>`` (the balanced one, raised to the ceil(p (n + 1))-th smallest of the n
known scores: ``choose_threshold``, the rule now at q0.9, which keeps at least p of queries like them however
few they are). ``ceiling-q0.9`` is no rule: the lowest threshold that keeps 90% of the episode's own in-support
queries, which no rule can know. What it rejects is the most any threshold on that score can reject while keeping
90% of them.

    python benchmarks/accuracy/open_set_rules.py --model protonet-photos --episodes 300
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from fewshot_sdk.data.folders import scan_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.methods.base import class_means
from fewshot_sdk.task.open_set import choose_threshold, held_out_scores
from fewshot_sdk.train.evaluate import auroc
from fewshot_sdk.train.recipes import dataset_splits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # photo_models.py beside this file
from photo_models import MODELS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QUANTILES = (0.9, 0.95)
KINDS = ("prototype", "max-softmax", "nearest-shot", "energy", "task-centred", "class-scaled")
KINDS += ("batch-centred", "batch-clusters")
THRESHOLDS = ("balanced", *(f"known-q{q:g}" for q in QUANTILES), *(f"balanced-floor-q{q:g}" for q in QUANTILES))
THRESHOLDS += ("conformal-floor-q0.9", "ceiling-q0.9")


def scores(kind: str, queries: torch.Tensor, support: torch.Tensor, labels: torch.Tensor, n: int, t: float):
    """The novelty of each query; ``queries`` is the episode's whole batch (the batch scores read all of it)."""
    if kind == "batch-centred":
        centre = torch.cat([support, queries]).mean(0)
        moved_queries, moved_support = F.normalize(queries - centre, dim=1), F.normalize(support - centre, dim=1)
        return scores("prototype", moved_queries, moved_support, labels, n, t)
    if kind == "batch-clusters":
        return batch_cluster_scores(queries, support, labels, n, t)
    prototypes = class_means(support, labels, n)
    distances = torch.cdist(queries, prototypes) ** 2
    if kind == "prototype":
        return distances.min(1).values / t
    if kind == "max-softmax":
        return -(-distances / t).softmax(1).max(1).values
    if kind == "energy":
        return -torch.logsumexp(-distances / t, 1)
    if kind == "nearest-shot":
        return (torch.cdist(queries, support) ** 2).min(1).values / t
    if kind == "task-centred":
        centre = support.mean(0)
        moved = F.normalize(support - centre, dim=1)
        return (torch.cdist(F.normalize(queries - centre, dim=1), class_means(moved, labels, n)) ** 2).min(1).values
    if kind == "class-scaled":
        spread = ((support - prototypes[labels]) ** 2).sum(1)
        per_class = class_means(spread[:, None], labels, n)[:, 0]
        per_class = torch.where(per_class > 0, per_class, spread.mean().clamp_min(1e-6))
        return (distances / per_class).min(1).values
    raise ValueError(kind)


def batch_cluster_scores(
    queries: torch.Tensor, support: torch.Tensor, labels: torch.Tensor, n: int, t: float, iterations: int = 10
) -> torch.Tensor:
    """Soft k-means over the batch: ``n`` class centres (the support counts fully) and ``n`` extra ones, begun
    farthest-first from the queries farthest from the prototypes; the distance to the nearest class centre less
    that to the nearest extra one."""
    prototypes = class_means(support, labels, n)
    farthest = (torch.cdist(queries, prototypes) ** 2).min(1).values
    extra = []
    for _ in range(min(n, len(queries))):
        pick = int(farthest.argmax())
        extra.append(queries[pick])
        farthest = torch.minimum(farthest, ((queries - queries[pick]) ** 2).sum(1))
    centres = torch.cat([prototypes, torch.stack(extra)])
    points = torch.cat([support, queries])
    fixed = F.one_hot(labels, len(centres)).to(points.dtype)
    for _ in range(iterations):
        soft = (-(torch.cdist(queries, centres) ** 2) / t).softmax(1)
        weights = torch.cat([fixed, soft])
        centres = (weights.T @ points) / weights.sum(0)[:, None].clamp_min(1e-6)
    distances = torch.cdist(queries, centres) ** 2
    return distances[:, :n].min(1).values - distances[:, n:].min(1).values


def open_set_ways(classes: int) -> tuple[int, int]:
    """(support classes, outside classes) of a domain's open-set episodes: 5 and up to 5, or half and the rest."""
    n_way = 5 if classes >= 10 else max(2, classes // 2)
    return n_way, min(5, classes - n_way)


def draw_episode(
    by_class: list[torch.Tensor], n_way: int, outside: int, shots: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(support indices, their labels, in-support query indices, outside query indices) of one episode:
    ``shots`` support and 15 query examples of each of ``n_way`` random classes, 5 of each of ``outside`` others."""
    classes = torch.randperm(len(by_class), generator=generator)[: n_way + outside].tolist()
    support, labels, inside, outsiders = [], [], [], []
    for label, c in enumerate(classes):
        order = by_class[c][torch.randperm(len(by_class[c]), generator=generator)]
        if label < n_way:
            support.append(order[:shots])
            labels.append(torch.full((shots,), label))
            inside.append(order[shots : shots + 15])
        else:
            outsiders.append(order[:5])
    return torch.cat(support), torch.cat(labels), torch.cat(inside), torch.cat(outsiders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="protonet-photos", choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domains", nargs="+", default=["eurosat_rgb", "plantvillage_apple", "caltech101"])
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--scores", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--thresholds", nargs="+", default=list(THRESHOLDS), choices=THRESHOLDS)
    args = parser.parse_args()
    learner = MODELS[args.model]().frozen_or_self()
    temperature = float(getattr(learner.config, "temperature", 1.0))
    kinds, thresholds = args.scores, args.thresholds
    print(f"{args.model}, {args.shots}-shot, {args.episodes} episodes a domain")
    print("| domain | ways + outside | score | AUROC | threshold | in-support rejected | outside accepted |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for domain in args.domains:
        if domain == "caltech101":
            data = dataset_splits(args.data / domain, learner).test
        else:
            data = LabelledImages.from_mapping(scan_class_folders(args.data / domain), learner.preprocessor)
        with torch.no_grad():
            features = torch.cat([learner.embed(part) for part in torch.split(data.images, 64)])
        by_class = data.indices_by_class()
        n_way, outside = open_set_ways(data.num_classes)
        generator = torch.Generator().manual_seed(0)
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        aurocs: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.episodes):
            support, y, inside, outsiders = draw_episode(by_class, n_way, outside, args.shots, generator)
            s, known_q, outside_q = features[support], features[inside], features[outsiders]
            for kind in kinds:
                batch_scores = scores(kind, torch.cat([known_q, outside_q]), s, y, n_way, temperature)
                inside_scores, outside_scores = batch_scores[: len(known_q)], batch_scores[len(known_q) :]
                aurocs[kind].append(auroc(inside_scores, outside_scores))

                def novelty_of(fit, fit_y, n, held, kind=kind):
                    return scores(kind, held, fit, fit_y, n, temperature)

                known, unknown = held_out_scores(novelty_of, s, y, n_way, min_classes=1)
                for rule in thresholds:
                    keep = None if rule == "balanced" else float(rule.rpartition("-q")[2])
                    if rule.startswith("ceiling"):
                        kept = math.ceil(keep * len(inside_scores) - 1e-9)  # the fewest in-support queries to keep
                        threshold = float(inside_scores.sort().values[kept - 1])
                    elif rule.startswith("known-q") and known.numel() > 0:
                        threshold = float(torch.quantile(known.double(), keep))
                    elif rule.startswith("balanced-floor") and known.numel() > 0:  # the rule before conformal-floor
                        balanced = choose_threshold(known, unknown, keep_known=None)
                        threshold = max(balanced, float(torch.quantile(known.double(), keep)))
                    else:  # the balanced threshold, floored for conformal-floor-q<p> (today's rule at q0.9)
                        threshold = choose_threshold(known, unknown, keep_known=keep)
                    rejected = float((inside_scores > threshold).double().mean())
                    accepted = float((outside_scores <= threshold).double().mean())
                    figures.setdefault((kind, rule), []).append((rejected, accepted))
        for kind in kinds:
            for rule in thresholds:
                pairs = figures[(kind, rule)]
                rejected = 100 * statistics.fmean(p[0] for p in pairs)
                accepted = 100 * statistics.fmean(p[1] for p in pairs)
                area = statistics.fmean(aurocs[kind])
                where = f"| {domain} | {n_way} + {outside} | {kind} | {area:.3f} |"
                print(f"{where} {rule} | {rejected:.1f} | {accepted:.1f} |", flush=True)


if __name__ == "__main__":
    main()
