"""`fewshot --help` and classifying with an exported .onnx file never import torch (start-up: ~0.4 s, not ~3 s)."""

from __future__ import annotations

import subprocess
import sys

import torch

import fewshot_sdk as fs

PROBE = """
import sys
from fewshot_sdk.cli.app import app
try:
    app({args!r}, standalone_mode=False)
finally:
    print("TORCH" if "torch" in sys.modules else "NO-TORCH")
"""


def cli_imports_torch(*args: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1] == "TORCH"


def test_help_does_not_import_torch():
    assert not cli_imports_torch("--help")


def test_classifying_with_an_onnx_file_does_not_import_torch(tmp_path, examples_dir):
    torch.manual_seed(0)
    task = fs.create("protonet").adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    path = task.export_onnx(tmp_path / "glyphs.onnx")
    query = sorted((examples_dir / "queries").glob("*.png"))[0]
    assert not cli_imports_torch("classify", "--model", str(path), "--query", str(query))
