"""Open-set answers: a novelty score per query and a rejection threshold taken from the support set alone.

**Novelty** says how far a query lies from every support class: the larger, the less it
looks like any of them. Each method's ``score_with_novelty`` defines it; the default is
the negative largest logit. For ProtoNet that is the squared distance to the nearest
prototype (over the temperature). For Siamese and Relation it is minus the best per-class
"same class" logit. Matching Networks use minus the best cosine to any stored support
embedding, because their logits are log-attention, normalised over the support.
Vaze et al. (2022, "Open-Set Recognition: a Good Closed-Set Classifier is All You Need")
show the largest logit separates unknown classes better than the largest softmax
probability (Hendrycks & Gimpel 2017). Softmax divides the distance to the nearest class by
the distances to all the others, so a query far from every class can still get 0.99.

**The "auto" threshold** simulates both kinds of query with the support images only.

- *Known* scores: each class's examples are dealt into folds by their index within the
  class, at most ``MAX_FOLDS`` of them. Each fold is scored by a task adapted on the rest,
  where its class is still present with fewer shots. A class with a single example gives
  no known score, since holding it out would remove the class.
- *Unknown* scores: each class's examples are scored by a task adapted without that class.

The threshold is the one that best separates the two sets: the highest balanced accuracy,
taken at the middle of the best interval, raised to a floor where it lies below it: the known
score under which a known query lands with probability at least ``KEEP_KNOWN``
(:func:`conformal_floor`). On a domain the backbone knows, the two sets barely overlap and
the balanced threshold already keeps nearly every known query. On a far one (satellite tiles,
leaves, X-rays) they overlap, and the balanced threshold rejected a quarter to a third of the
user's own in-support photos; the floor keeps 90% or more of them there, however few the
support photos, at the cost of accepting more outside ones
(``benchmarks/accuracy/open_set_rules.py``). With one shot per
class there are no known scores. The threshold is then the lowest unknown score: a query is
rejected only when it lies farther from every class than the closest pair of support classes
lie from each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from fewshot_sdk.errors import InputError

#: Folds of the known-class estimate: enough for 5-shot leave-one-out, bounded cost for larger supports.
MAX_FOLDS = 5
#: The "auto" threshold keeps at least this share of in-support queries like the held-out ones (conformal_floor).
KEEP_KNOWN = 0.9

#: Scores queries ``x`` against a task adapted on ``(support_x, support_y, n_way)``: novelty [B].
NoveltyOf = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], torch.Tensor]


def max_logit_novelty(logits: torch.Tensor) -> torch.Tensor:
    """The default novelty: minus the largest logit, [B, C] -> [B]."""
    return -logits.amax(dim=-1)


def shot_folds(labels: torch.Tensor, n_way: int) -> Iterator[torch.Tensor]:
    """Boolean masks of the examples each fold holds out, never a class's only example.

    Example ``i`` of a class with at least two examples goes to fold ``i % F``, where
    ``F = min(MAX_FOLDS, largest class)``. A fold then holds at most ``ceil(count / F)``
    of a class's ``count`` examples, so the rest of the class always stays in the fit.
    """
    counts = torch.bincount(labels, minlength=n_way)
    folds = min(MAX_FOLDS, int(counts.max()))
    index_in_class = torch.zeros_like(labels)
    for label in range(n_way):
        members = labels == label
        index_in_class[members] = torch.arange(int(members.sum()))
    assignable = counts[labels] >= 2
    for fold in range(folds):
        mask = assignable & (index_in_class % folds == fold)
        if bool(mask.any()):
            yield mask


def without_class(labels: torch.Tensor, label: int) -> torch.Tensor:
    """Labels of the examples outside class ``label``, renumbered 0..n-2."""
    kept = labels[labels != label]
    return kept - (kept > label).long()


def held_out_scores(
    novelty_of: NoveltyOf, x: torch.Tensor, y: torch.Tensor, n_way: int, min_classes: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """(known, unknown) novelty scores of the support examples, each scored by a task that never saw it.

    ``min_classes`` is the fewest classes the method adapts to. A leave-class-out task has
    ``n_way - 1`` classes, so there are no unknown scores below ``min_classes + 1`` classes.
    """
    known = [novelty_of(x[~fold], y[~fold], n_way, x[fold]) for fold in shot_folds(y, n_way)]
    unknown = []
    if n_way - 1 >= min_classes:
        unknown = [novelty_of(x[y != c], without_class(y, c), n_way - 1, x[y == c]) for c in range(n_way)]
    empty = x.new_zeros(0)
    return (torch.cat(known) if known else empty), (torch.cat(unknown) if unknown else empty)


def choose_threshold(
    known: torch.Tensor, unknown: torch.Tensor, method: str = "this", keep_known: float | None = KEEP_KNOWN
) -> float:
    """The novelty above which a query is rejected, from held-out support scores (module docstring).

    ``keep_known``: the share of known queries the threshold is raised to keep (:func:`conformal_floor`); None
    for the balanced one alone.
    """
    if unknown.numel() == 0:
        raise InputError(
            f"reject='auto' holds each support class out in turn, and {method} tasks need more classes for that; "
            "pass reject=<novelty threshold> instead"
        )
    known, unknown = known.double().flatten(), unknown.double().flatten()
    if known.numel() == 0:
        return float(unknown.min())
    values = torch.cat([known, unknown]).unique()  # sorted
    candidates = torch.cat([values[:1] - 1, (values[1:] + values[:-1]) / 2, values[-1:] + 1])
    accepted_known = (known[None, :] <= candidates[:, None]).double().mean(1)
    rejected_unknown = (unknown[None, :] > candidates[:, None]).double().mean(1)
    balanced = (accepted_known + rejected_unknown) / 2
    best = torch.nonzero(balanced >= balanced.max() - 1e-12).flatten()
    balanced_threshold = float(candidates[best].median())
    if keep_known is None:
        return balanced_threshold
    return max(balanced_threshold, conformal_floor(known, keep_known))


def conformal_floor(known: torch.Tensor, keep: float) -> float:
    """The ceil(keep * (n + 1))-th smallest of the ``n`` held-out known scores (split-conformal prediction:
    Vovk et al. 2005; Angelopoulos & Bates 2021).

    A query whose score is exchangeable with them lies at or below it with probability at least ``keep``,
    whatever their distribution and however few they are. A plain ``keep`` quantile of few scores keeps less:
    the expected share below the k-th smallest of n is k / (n + 1), so the 0.95 quantile of the ten scores of a
    2-way 5-shot support kept about 87%. Below ``keep / (1 - keep)`` scores (9 for 0.9) that rank does not exist
    and the largest score is the floor, which keeps n / (n + 1).
    """
    ordered = known.double().flatten().sort().values
    rank = min(len(ordered), math.ceil(keep * (len(ordered) + 1) - 1e-9))
    return float(ordered[rank - 1])
