"""ONNX: write a task network as one verified ``.onnx`` file, run such a file without torch.

The writer (``verified_graph`` / ``write_graph``, torch side) lives in
:mod:`fewshot_sdk.export.onnx` and knows no task (``task.export_onnx`` calls it);
``OnnxClassifier`` / ``classify_with_onnx`` (onnxruntime + numpy + pillow only) in
:mod:`fewshot_sdk.export.runtime`. Names are resolved lazily so that importing the
runtime never imports the exporter, and with it torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LOCATIONS = {
    "verified_graph": "onnx",
    "write_graph": "onnx",
    "ExportError": "onnx",
    "OnnxClassifier": "runtime",
    "classify_with_onnx": "runtime",
    "choose_providers": "runtime",
    "OnnxMetadata": "metadata",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LOCATIONS[name]}"), name)
