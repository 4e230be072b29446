"""The JSON the service answers with: a ``Prediction`` field by field, and how ``reject``, ``transductive``
and ``finetune`` are read from a URL.

A prediction keeps the API's names (``class_names``, ``indices``, ``probs``, ``novelty``, ``threshold``,
``rejected``), one entry per image in the order sent, so a client in another language reads what a
Python user of ``task.predict`` reads.
"""

from __future__ import annotations

import math
from typing import Any

from fewshot_sdk.api import Prediction
from fewshot_sdk.errors import InputError
from fewshot_sdk.task.adapted import AdaptedModel


def prediction_json(prediction: Prediction, files: list[str]) -> dict[str, Any]:
    novelty = prediction.novelty
    return {
        "files": files,
        "classes": list(prediction.classes),
        "class_names": prediction.class_names,
        "indices": prediction.indices.tolist(),
        "probs": prediction.probs.tolist(),
        "novelty": None if novelty is None else novelty.tolist(),
        "threshold": prediction.threshold,
        "rejected": prediction.rejected.tolist(),
    }


def read_reject(text: str | None, task: AdaptedModel) -> float | str | None:
    """``?reject=``: ``auto`` (the task's threshold), ``none`` (always a class) or a threshold of the client's.

    Left out: ``auto`` when the task has a threshold (every task this service made has one), else ``none``.
    """
    if text is None:
        return "auto" if task.novelty_threshold_or_none() is not None else None
    word = text.strip().lower()
    if word == "auto":
        return "auto"
    if word in ("none", "never", ""):
        return None
    try:
        value = float(word)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"reject takes auto, none or a finite novelty threshold, got {text[:40]!r}")
    return value


def read_transductive(text: str | None) -> bool:
    """``?transductive=``: ``true`` lets the images sent together refine the task before it answers them
    (``predict(..., transductive=True)``); left out or ``false``: each image is answered on its own."""
    if text is None:
        return False
    word = text.strip().lower()
    if word in ("true", "1", "yes"):
        return True
    if word in ("false", "0", "no"):
        return False
    raise InputError(f"transductive takes true or false, got {text[:40]!r}")


def read_finetune(text: str | None) -> dict[str, str]:
    """``POST /tasks?finetune=auto``: ``adapt``'s ``finetune="auto"`` (seconds per task, better on photos unlike
    the model's); left out or ``none``: no fine-tuning."""
    word = "none" if text is None else text.strip().lower()
    if word in ("none", ""):
        return {}
    if word == "auto":
        return {"finetune": "auto"}
    raise InputError(f"finetune takes auto or none, got {text[:40]!r}")
