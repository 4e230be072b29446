"""The options every ``predict`` takes (``reject``, ``batch_size``), checked alike by every runtime.

The torch task, the onnxruntime task and the torch-free ``OnnxClassifier`` all take them, so
one module refuses a bad one with one line and resolves ``reject`` one way. It imports neither
torch nor numpy: ``fewshot classify --model x.onnx`` uses it without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fewshot_sdk.errors import InputError

Reject = float | str | None

#: Where the calibrated threshold of a torch or onnxruntime task can be read.
TASK_THRESHOLD = "task.novelty_threshold"


def check_reject(reject: object, calibrated: str = TASK_THRESHOLD) -> None:
    """Refuse anything but None, ``"auto"`` or a finite number, naming where the calibrated threshold is."""
    if reject is None or (isinstance(reject, str) and reject == "auto"):
        return
    number = isinstance(reject, (int, float)) and not isinstance(reject, bool)
    try:
        finite = number and math.isfinite(float(reject))  # type: ignore[arg-type]
    except OverflowError:  # an int beyond float range
        finite = False
    if not finite:
        raise InputError(
            f"reject must be None, 'auto' or a finite novelty threshold (a number), got {reject!r}; "
            f"see {calibrated} for the calibrated one"
        )


def resolve_threshold(reject: Reject, calibrated: Callable[[], float], where: str = TASK_THRESHOLD) -> float | None:
    """The threshold ``reject`` asks for: None, ``calibrated()`` for "auto" (called only then), or the number."""
    check_reject(reject, where)
    if reject is None:
        return None
    if isinstance(reject, str):  # "auto", the only string check_reject lets through
        return calibrated()
    return float(reject)


def check_batch_size(batch_size: object) -> int:
    """A whole number of queries per forward pass, at least 1 (bools refused: ``True`` is no size)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return batch_size
