"""What makes a list of class names usable: unique, and free of control characters.

Names come from folder names and from files others wrote (``task.json``, an ONNX file's
metadata). Two classes of one name make answers ambiguous; a control character (a terminal
escape, a newline) in a name would reach the user's terminal or logs as a command, not text.
Torch-free and pydantic-free: the ONNX runtime checks its files with it too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def class_names_problem(names: Sequence[str]) -> str | None:
    """What is wrong with ``names`` in one phrase, or None when they are usable."""
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name:
            return f"class name {name!r} is not a non-empty string"
        if any(unicodedata.category(char) in ("Cc", "Cf") for char in name):
            return f"class name {name!r} holds control characters"
        if name in seen:
            return f"class name {name!r} appears twice; class names must be unique"
        seen.add(name)
    return None
