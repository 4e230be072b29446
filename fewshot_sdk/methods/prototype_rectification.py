"""Transductive prototypes: BD-CSPN's prototype rectification (Liu, Song & Qin, ECCV 2020).

A prototype from one or five photos of a domain the backbone never saw is a poor estimate of its
class mean. The unlabelled query batch holds more samples of the same classes, so it can correct
the prototypes before they score it, in two steps of the paper:

- **cross-class bias** (sec. 3.2, eq. 9): the support and the queries come from one distribution
  but their means differ when the support is small; every query is shifted by
  ``mean(support) - mean(queries)``, here with the support mean taken as the shot-weighted mean of
  the prototypes, which is exact.
- **intra-class bias** (eq. 7-8): each query is pseudo-labelled by its nearest prototype (cosine);
  each class's rectified prototype is the mean of its support and its pseudo-labelled queries,
  weighted by ``softmax(sharpness * cos(x, P_n))`` over that set, so confident queries count most.
  The support enters as its prototype, counted ``shots`` times: the paper weighs each support
  embedding by its own cosine, which needs the support's embeddings; the prototype stands for
  them at the cosine of their mean (equal at one shot).

The answers then depend on the batch: the same photo may be classified otherwise in another batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: ε of eq. 8: how sharply confidence weights the members of a class (the paper's value).
SHARPNESS = 10.0


def rectify(
    prototypes: torch.Tensor, shots: torch.Tensor, queries: torch.Tensor, sharpness: float = SHARPNESS
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
