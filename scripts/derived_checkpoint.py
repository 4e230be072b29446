"""What a checkpoint made from another one keeps of it, for the scripts that make them.

The new learner keeps the source's domain, storage dtype and training record, and says how it was made
under ``training.extra[key]``; the recorded figures are dropped, since they were measured on the source:
evaluate the new checkpoint with ``fewshot evaluate ... --record``.
"""

from __future__ import annotations

import fewshot_sdk as fs


def carry_over(source: fs.Learner, learner: fs.Learner, key: str, how: dict[str, object]) -> None:
    """Give ``learner`` (built from ``source``) its source's domain, dtype and provenance, noting ``how`` at ``key``."""
    learner.domain = source.domain
    learner.storage_dtype = source.storage_dtype
    learner.provenance = source.provenance.model_copy(deep=True)
    learner.provenance.results = []  # figures of the source: evaluate the new checkpoint
    learner.provenance.lake_runs = None
    if learner.provenance.training is not None:
        learner.provenance.training.extra[key] = how
