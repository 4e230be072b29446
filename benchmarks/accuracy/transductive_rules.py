"""Choosing ``predict(..., transductive=True)``'s rule: transductive variants on one set of episodes.

Every image of a domain is embedded once by the model's backbone; then ``fewshot evaluate``'s seeded
episodes are drawn (5-way, or the domain's class count; 15 queries a class; seed 0, so the episodes are
those of ``fewshot evaluate --domain``), and every variant scores the same episodes, so differences are
paired. The variants work on the model's transformed features (sqrt-l2 for the photo model):

- ``inductive``: nearest prototype (no transduction);
- ``bd-cspn``: the rule shipped before this script chose another (:func:`rectify` here);
- ``bd-cspn s5`` / ``s20``: its sharpness 5 / 20 instead of the paper's 10;
- ``bd-cspn x2``: rectified twice (the second time from the rectified prototypes);
- ``centred``: support and queries centred on their joint mean and re-normalised, then nearest prototype
  (EASY's transductive centring, Bendou et al. 2022);
- ``centred bd-cspn``: centring, then rectification;
- ``soft k-means b<beta> x<n>``: prototypes refined by n soft k-means steps over the queries (the support
  kept as hard members, each counted once per shot), responsibilities softmax(beta * cosine);
- ``centred soft k-means ...``: the same after centring;
- ``bd-cspn soft k-means``: rectification, then soft k-means from the rectified prototypes.

    python benchmarks/accuracy/transductive_rules.py --episodes 600
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from fewshot_sdk.data.episodes import Episode, EpisodeSampler
from fewshot_sdk.data.folders import scan_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.methods.base import class_means
from fewshot_sdk.methods.transductive_prototypes import refine

sys.path.insert(0, str(Path(__file__).resolve().parent))  # photo_models.py beside this file
from photo_models import MODELS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FAR = ["eurosat_rgb", "plantvillage_apple", "chest_xray_pneumonia", "dtd_textures"]

#: (prototypes [N, D], shots [N], support [S, D], support labels [S], queries [B, D]) -> predicted classes [B]
Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rectify(
    prototypes: torch.Tensor, shots: torch.Tensor, queries: torch.Tensor, sharpness: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rectified prototypes [N, D], shifted queries [B, D]) for prototypes [N, D] and a query batch [B, D].

    ``shots`` [N] counts each class's support examples. The shifted queries are what the rectified
    prototypes score (the paper classifies in the shifted space).
    """
    weights = shots.to(prototypes.dtype)
    support_mean = (weights[:, None] * prototypes).sum(0) / weights.sum()
    shifted = queries + (support_mean - queries.mean(0))
    members = torch.cat([prototypes, shifted])  # each prototype stands for its support
    cosine = F.normalize(members, dim=1) @ F.normalize(prototypes, dim=1).t()  # [N + B, N]
    pseudo = cosine[len(prototypes) :].argmax(1)
    n_way = len(prototypes)
    belongs = torch.cat([torch.eye(n_way, dtype=torch.bool, device=prototypes.device), F.one_hot(pseudo, n_way).bool()])
    counts = torch.cat([weights, torch.ones(len(queries), dtype=weights.dtype, device=weights.device)])
    # softmax over each class's members of sharpness * cos, a support prototype counted `shots` times
    logits = (sharpness * cosine).masked_fill(~belongs, float("-inf")) + counts.log()[:, None]
    weight = logits.softmax(0)  # [N + B, N], columns sum to 1
    return weight.t() @ members, shifted


def nearest(prototypes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    return torch.cdist(queries, prototypes).argmin(1)


def centred(support: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centre = torch.cat([support, queries]).mean(0)
    return F.normalize(support - centre, dim=1), F.normalize(queries - centre, dim=1)


def support_centred(support: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centre = support.mean(0)
    return F.normalize(support - centre, dim=1), F.normalize(queries - centre, dim=1)


def soft_kmeans(
    prototypes: torch.Tensor,
    shots: torch.Tensor,
    queries: torch.Tensor,
    beta: float,
    steps: int,
    priors: bool = False,
    support_weight: float = 1.0,
    fixed_support: bool = False,
):
    """``fixed_support``: each step averages the queries with the support's own prototype (soft k-means with
    the support as fixed members, Ren et al. 2018); otherwise with the previous step's prototype, which lets
    the queries pull further. ``priors``: EM's mixing proportions too (a class's share of the batch), so an
    imbalanced batch is not pulled towards equal clusters."""
    weights = support_weight * shots.to(prototypes.dtype)[:, None]
    log_prior = torch.zeros(len(prototypes))
    support = prototypes
    for _ in range(steps):
        logits = beta * F.normalize(queries, dim=1) @ F.normalize(prototypes, dim=1).t() + log_prior
        responsibility = logits.softmax(1)
        anchor = support if fixed_support else prototypes
        prototypes = (weights * anchor + responsibility.t() @ queries) / (weights + responsibility.sum(0)[:, None])
        if priors:
            log_prior = (responsibility.mean(0) + 1e-6).log()
    return prototypes


def imbalanced(episode: Episode, n_way: int, generator: torch.Generator) -> Episode:
    """The episode with a random 1..15 of each class's queries kept."""
    keep = torch.zeros(len(episode.query_y), dtype=torch.bool)
    for c in range(n_way):
        members = (episode.query_y == c).nonzero().flatten()
        count = int(torch.randint(1, len(members) + 1, (), generator=generator))
        keep[members[:count]] = True
    return replace(episode, query_x=episode.query_x[keep], query_y=episode.query_y[keep])


def rules() -> dict[str, Rule]:
    def bd(sharpness: float = 10.0, times: int = 1) -> Rule:
        def rule(p, shots, s, sy, q):
            prototypes, shifted = p, q
            for _ in range(times):
                prototypes, shifted = rectify(prototypes, shots, q, sharpness)
            return nearest(prototypes, shifted)

        return rule

    def centred_then(inner: Rule, centring: Callable = centred) -> Rule:
        def rule(p, shots, s, sy, q):
            cs, cq = centring(s, q)
            return inner(class_means(cs, sy, len(p)), shots, cs, sy, cq)

        return rule

    def skm(beta: float, steps: int, priors: bool = False, support_weight: float = 1.0, fixed: bool = False) -> Rule:
        return lambda p, shots, s, sy, q: nearest(
            soft_kmeans(p, shots, q, beta, steps, priors, support_weight, fixed), q
        )

    def support_centred_then(inner: Rule) -> Rule:
        return centred_then(inner, support_centred)

    def bd_skm(beta: float, steps: int) -> Rule:
        def rule(p, shots, s, sy, q):
            prototypes, shifted = rectify(p, shots, q)
            return nearest(soft_kmeans(prototypes, shots, shifted, beta, steps), shifted)

        return rule

    inductive: Rule = lambda p, shots, s, sy, q: nearest(p, q)  # noqa: E731

    def from_prototypes(inner: Rule) -> Rule:
        """Support-centred from the task's state alone: the centre is the shot-weighted mean of the prototypes
        (exact), each centred prototype ``normalize(p - centre)`` (exact at one shot)."""

        def rule(p, shots, s, sy, q):
            w = shots.to(p.dtype)[:, None]
            centre = (w * p).sum(0) / w.sum()
            return inner(F.normalize(p - centre, dim=1), shots, s, sy, F.normalize(q - centre, dim=1))

        return rule

    def shipped(p, shots, s, sy, q):
        prototypes, centred_queries = refine(p, shots, q)
        return nearest(prototypes, centred_queries)

    return {
        "inductive": inductive,
        "shipped": shipped,
        "bd-cspn": bd(),
        "bd-cspn s5": bd(5.0),
        "bd-cspn s20": bd(20.0),
        "bd-cspn x2": bd(times=2),
        "centred": centred_then(inductive),
        "support-centred": support_centred_then(inductive),
        "centred bd-cspn": centred_then(bd()),
        "soft k-means b10 x5": skm(10.0, 5),
        "soft k-means b20 x10": skm(20.0, 10),
        "centred soft k-means b10 x5": centred_then(skm(10.0, 5)),
        "centred soft k-means b20 x10": centred_then(skm(20.0, 10)),
        "centred soft k-means b20 x5": centred_then(skm(20.0, 5)),
        "centred soft k-means b10 x10": centred_then(skm(10.0, 10)),
        "centred soft k-means b30 x10": centred_then(skm(30.0, 10)),
        "centred soft k-means b20 x5 priors": centred_then(skm(20.0, 5, priors=True)),
        "centred soft k-means b20 x5 support x3": centred_then(skm(20.0, 5, support_weight=3.0)),
        "bd-cspn soft k-means b20 x5": bd_skm(20.0, 5),
        "centred bd-cspn soft k-means b20 x5": centred_then(bd_skm(20.0, 5)),
        "centred bd-cspn soft k-means b10 x10": centred_then(bd_skm(10.0, 10)),
        "centred bd-cspn soft k-means b30 x10": centred_then(bd_skm(30.0, 10)),
        "support-centred soft k-means b20 x5": support_centred_then(skm(20.0, 5)),
        "support-centred soft k-means b20 x5 priors": support_centred_then(skm(20.0, 5, priors=True)),
        "support-centred soft k-means b20 x5 support x3": support_centred_then(skm(20.0, 5, support_weight=3.0)),
        "support-centred soft k-means b20 x10 priors": support_centred_then(skm(20.0, 10, priors=True)),
        "support-centred soft k-means b30 x5 priors": support_centred_then(skm(30.0, 5, priors=True)),
        "from-prototypes support-centred soft k-means b20 x5 support x3": from_prototypes(
            skm(20.0, 5, support_weight=3.0)
        ),
        "from-prototypes support-centred fixed-support soft k-means b20 x5": from_prototypes(skm(20.0, 5, fixed=True)),
        "from-prototypes support-centred fixed-support soft k-means b20 x5 support x3": from_prototypes(
            skm(20.0, 5, support_weight=3.0, fixed=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="protonet-photos", choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domains", nargs="+", default=FAR)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument(
        "--rules", nargs="+", default=None, help="the rules to run (inductive always runs); default all"
    )
    parser.add_argument(
        "--imbalanced",
        action="store_true",
        help="keep a random 1..15 of each class's queries (seeded), as a user's batch is rarely balanced",
    )
    args = parser.parse_args()
    learner = MODELS[args.model]().frozen_or_self()
    chosen = rules()
    if args.rules:
        unknown = set(args.rules) - set(chosen)
        if unknown:
            parser.error(f"unknown rules {sorted(unknown)}; known: {list(chosen)}")
        chosen = {name: rule for name, rule in chosen.items() if name == "inductive" or name in args.rules}
    accuracy: dict[tuple[str, int], dict[str, list[float]]] = {}
    with torch.inference_mode():
        for domain in args.domains:
            dataset = LabelledImages.from_mapping(scan_class_folders(args.data / domain), learner.preprocessor)
            stages = len(learner.backbone.stages)
            features = learner.transform(learner.backbone.stage_outputs(dataset.images, stages))
            embedded = LabelledImages(features, dataset.labels, dataset.class_names)
            n_way = min(5, dataset.num_classes)
            for shots in (1, 5):
                sampler = EpisodeSampler(embedded, n_way, shots, 15, seed=0)
                generator = torch.Generator().manual_seed(1)
                per_rule: dict[str, list[float]] = {name: [] for name in chosen}
                for _ in range(args.episodes):
                    e = sampler.sample()
                    if args.imbalanced:
                        e = imbalanced(e, n_way, generator)
                    counts = torch.bincount(e.support_y, minlength=n_way)
                    prototypes = class_means(e.support_x, e.support_y, n_way)
                    for name, rule in chosen.items():
                        hit = rule(prototypes, counts, e.support_x, e.support_y, e.query_x) == e.query_y
                        per_rule[name].append(100 * float(hit.float().mean()))
                accuracy[(domain, shots)] = per_rule
                print(f"{domain} {shots}-shot done", file=sys.stderr, flush=True)
    balance = "imbalanced queries (1..15 a class)" if args.imbalanced else "15 queries a class"
    print(f"{args.model}, {args.episodes} episodes a domain and shot, {balance}; paired differences against inductive")
    print("| rule | " + " | ".join(f"{d} {k}s" for d, k in accuracy) + " | far mean 1s | far mean 5s |")
    print("| --- " * (len(accuracy) + 3) + "|")
    for name in chosen:
        cells, means = [], {1: [], 5: []}
        for (_domain, shots), per_rule in accuracy.items():
            mean = statistics.fmean(per_rule[name])
            diffs = [a - b for a, b in zip(per_rule[name], per_rule["inductive"], strict=True)]
            ci = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5 if name != "inductive" else 0.0
            cells.append(f"{mean:.2f} ({statistics.fmean(diffs):+.2f} ± {ci:.2f})")
            means[shots].append(mean)
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {statistics.fmean(means[1]):.2f} | {statistics.fmean(means[5]):.2f} |"
        )


if __name__ == "__main__":
    main()
