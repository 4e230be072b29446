"""ONNX deployment: export an adapted task to one ``.onnx`` file, run it without torch.

``export_task`` (torch side) lives in :mod:`fewshot_sdk.export.onnx`;
``OnnxClassifier`` / ``classify_with_onnx`` (onnxruntime + numpy + pillow only) in
:mod:`fewshot_sdk.export.runtime`. Names are resolved lazily so that importing the
runtime never imports the exporter, and with it torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LOCATIONS = {
    "export_task": "onnx",
    "ExportError": "onnx",
    "OnnxClassifier": "runtime",
    "OnnxTask": "onnx_task",
    "classify_with_onnx": "runtime",
    "choose_providers": "runtime",
    "OnnxMetadata": "metadata",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LOCATIONS[name]}"), name)
