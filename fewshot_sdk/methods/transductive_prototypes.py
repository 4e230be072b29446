"""Transductive prototypes: soft k-means over the query batch, in features centred on the support.

A prototype from one or five photos of a domain the backbone never saw is a poor estimate of its
class mean. The unlabelled query batch holds more samples of the same classes, so it can move the
prototypes before they score it:

- **centring on the support**: every feature has the support's mean subtracted and is put back on
  the unit sphere (the centring of EASY, Bendou et al. 2022, there over support and queries). The
  centre is the shot-weighted mean of the prototypes, which is the support's mean exactly; each
  centred prototype is ``normalize(prototype - centre)``, exact at one shot. The centre comes from
  the support alone because a batch's own mean moves with its class mix: centred on support and
  queries, or shifted as BD-CSPN shifts them (Liu et al. 2020), a batch holding a random 1 to 15
  photos of each class lost points at five shots on every far development domain.
- **soft k-means** (Ren et al. 2018): ``STEPS`` times, each query is softly assigned to the classes,
  ``softmax(SHARPNESS * cos(query, prototype))``, and each prototype becomes the mean of its support
  (counted once per shot) and of the queries weighted by their assignment.

The rule and its constants were chosen on development domains (EuroSAT, PlantVillage) against
the alternatives above, with balanced and imbalanced batches
(``benchmarks/accuracy/transductive_rules.py``). The answers depend on the batch: the same photo
may be classified otherwise in another batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: soft k-means' inverse temperature on cosines (β)
SHARPNESS = 20.0
#: soft k-means' assignment-update rounds
STEPS = 5


def refine(prototypes: torch.Tensor, shots: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(refined prototypes [N, D], centred queries [B, D]) for prototypes [N, D] and a query batch [B, D].

    ``shots`` [N] counts each class's support examples. The refined prototypes score the centred
    queries (both live in the centred space).
    """
    weights = shots.to(prototypes.dtype)[:, None]
    centre = (weights * prototypes).sum(0) / weights.sum()
    support = F.normalize(prototypes - centre, dim=1)
    centred = F.normalize(queries - centre, dim=1)
    refined = support
    for _ in range(STEPS):
        assignment = (SHARPNESS * centred @ F.normalize(refined, dim=1).t()).softmax(1)  # [B, N]
        refined = (weights * support + assignment.t() @ centred) / (weights + assignment.sum(0)[:, None])
    return refined, centred
