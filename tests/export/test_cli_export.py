"""`fewshot export` and `fewshot classify --model FILE.onnx`."""

from __future__ import annotations

import json

from cli_support import assert_clean_error, run

import fewshot_sdk as fs


def probabilities(result) -> dict[str, dict[str, float]]:
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    return {row["query"]: {e["class"]: e["probability"] for e in row["top_k"]} for row in rows}


def test_export_then_classify_with_onnx_matches_the_torch_classify(tmp_path, examples_dir, checkpoint):
    out = tmp_path / "task.onnx"
    support, queries = examples_dir / "support", examples_dir / "queries"
    result = run("export", "--support", support, "--model", checkpoint, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "exported the protonet task (3 classes)" in result.output
    onnx_rows = probabilities(run("classify", "--model", out, "--query", queries, "--top-k", 3, "--json"))
    torch_rows = probabilities(
        run("classify", "--model", checkpoint, "--support", support, "--query", queries, "--top-k", 3, "--json")
    )
    assert onnx_rows.keys() == torch_rows.keys() and len(onnx_rows) == 3
    for query, expected in torch_rows.items():
        assert onnx_rows[query].keys() == expected.keys()
        assert all(abs(onnx_rows[query][c] - p) <= 1e-4 for c, p in expected.items())

    assert_clean_error(run("export", "--support", support, "--model", checkpoint, "--out", out), "--overwrite")
    result = run("export", "--support", support, "--model", checkpoint, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert_clean_error(
        run("classify", "--model", out, "--support", support, "--query", queries), "already holds its support set"
    )


def test_export_a_saved_task_folder(tmp_path, examples_dir, checkpoint):
    task = fs.load(checkpoint).adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    folder = task.save(tmp_path / "task")
    out = tmp_path / "saved.onnx"
    assert run("export", "--model", folder, "--out", out).exit_code == 0
    assert_clean_error(
        run("export", "--model", folder, "--support", examples_dir / "support", "--out", tmp_path / "x.onnx"),
        "drop --support",
    )
    assert_clean_error(run("export", "--model", checkpoint, "--out", tmp_path / "y.onnx"), "--support")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_classify_refuses_foreign_corrupt_and_missing_onnx_files(tmp_path, examples_dir):
    import onnx

    query = next((examples_dir / "queries").glob("*.png"))
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 1, 28, 28]) for n in "xy"]
    graph = onnx.helper.make_graph([node], "g", info[:1], info[1:])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "foreign.onnx")
    assert_clean_error(
        run("classify", "--model", tmp_path / "foreign.onnx", "--query", query),
        "was not exported by fewshot-sdk (no fewshot metadata); export it with `fewshot export`",
    )
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00garbage")
    result = run("classify", "--model", tmp_path / "corrupt.onnx", "--query", query)
    assert_clean_error(result, "cannot load ONNX model")
    assert len(result.output.strip().splitlines()) == 1
    assert_clean_error(run("classify", "--model", tmp_path / "none.onnx", "--query", query), "ONNX model not found")
