"""int8 export: calibrated on the task's support images, written only if it keeps their answers."""

from __future__ import annotations

import pytest
from cli_support import run

import fewshot_sdk as fs
from fewshot_sdk.export import quantize
from fewshot_sdk.export.onnx import ExportError
from fewshot_sdk.export.runtime import OnnxClassifier


@pytest.fixture(scope="module")
def task(examples_dir):
    return fs.load("protonet-omniglot").adapt(fs.SupportSet.from_folder(examples_dir / "support"))


def test_an_int8_file_is_smaller_marked_and_answers_as_float32_does(task, tmp_path, examples_dir):
    float32 = task.export_onnx(tmp_path / "f.onnx")
    int8 = task.export_onnx(tmp_path / "i.onnx", quantize="int8")
    assert int8.stat().st_size < float32.stat().st_size / 2
    assert OnnxClassifier(int8).metadata.quantized == "int8"
    assert OnnxClassifier(float32).metadata.quantized is None
    queries = sorted((examples_dir / "queries").glob("*.png"))
    want, got = fs.load_task(float32).predict(queries), fs.load_task(int8).predict(queries)
    assert (want.indices == got.indices).all()
    assert float((want.probs - got.probs).abs().max()) <= quantize.PROB_TOLERANCE
    assert got.novelty is not None and got.threshold is None


def test_int8_needs_the_support_images_and_a_known_format(task, tmp_path):
    reloaded = fs.load_task(task.save(tmp_path / "task"))
    with pytest.raises(fs.InputError, match="calibrates on the task's support images"):
        reloaded.export_onnx(tmp_path / "r.onnx", quantize="int8")
    with pytest.raises(fs.InputError, match="quantize takes"):
        task.export_onnx(tmp_path / "x.onnx", quantize="int4")
    assert not (tmp_path / "r.onnx").exists() and not (tmp_path / "x.onnx").exists()


def test_an_int8_graph_that_changes_answers_is_not_written(task, tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "PROB_TOLERANCE", 0.0)
    with pytest.raises(ExportError, match="int8 changes this task's answers"):
        task.export_onnx(tmp_path / "i.onnx", quantize="int8")
    assert not (tmp_path / "i.onnx").exists()


def test_the_cli_exports_int8(tmp_path, examples_dir):
    out = tmp_path / "task.onnx"
    result = run(
        "export",
        "--model",
        "protonet-omniglot",
        "--support",
        examples_dir / "support",
        "--out",
        out,
        "--quantize",
        "int8",
    )
    assert result.exit_code == 0, result.output
    assert OnnxClassifier(out).metadata.quantized == "int8"
