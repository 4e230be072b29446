"""Commands that only read files never import torch (start-up: ~0.3 s, not ~2 s), and ``models`` and ``--help``
not onnxruntime either; classifying with an exported .onnx file needs onnxruntime, never torch."""

from __future__ import annotations

import pytest
import torch
from cli_support import imports_of

import fewshot_sdk as fs

HEAVY = ("torch", "onnxruntime")


def heavy_imports(*args: str) -> set[str]:
    """Which of torch and onnxruntime ``fewshot ARGS`` imports, run in a fresh interpreter."""
    return imports_of(args, HEAVY)


@pytest.mark.parametrize(
    "args", [("--help",), ("models",), ("models", "--json"), ("classify", "--help"), ("train", "--help")]
)
def test_help_and_listing_models_import_neither_torch_nor_onnxruntime(args):
    assert heavy_imports(*args) == set()


def test_classifying_with_an_onnx_file_does_not_import_torch(tmp_path, examples_dir):
    torch.manual_seed(0)
    task = fs.create("protonet").adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    path = task.export_onnx(tmp_path / "glyphs.onnx")
    query = sorted((examples_dir / "queries").glob("*.png"))[0]
    # onnxruntime seen: the probe does see an import
    assert heavy_imports("classify", "--model", str(path), "--query", str(query)) == {"onnxruntime"}
