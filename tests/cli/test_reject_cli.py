"""fewshot classify --reject: queries unlike every support class answered `unknown` (JSON null)."""

import json

import pytest
from cli_support import assert_clean_error, run

import fewshot_sdk as fs


@pytest.fixture(scope="module")
def queries(examples_dir):
    characters = sorted((examples_dir / "queries").glob("*.png"))
    photos = sorted((examples_dir / "photos" / "queries").glob("*"))[:2]
    return characters + photos


def rows(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("[") :])


def test_reject_auto_names_characters_and_answers_unknown_for_photos(examples_dir, queries, tmp_path):
    args = ["classify", "--model", "protonet-omniglot", "--support", examples_dir / "support"]
    queried = [a for q in queries for a in ("--query", q)]
    answers = rows(run(*args, *queried, "--reject", "auto", "--json"))
    assert [row["class"] for row in answers[3:]] == [None, None]
    assert all(row["class"] is not None and row["novelty"] <= row["threshold"] for row in answers[:3])
    assert all(row["novelty"] > row["threshold"] for row in answers[3:])
    table = run(*args, *queried, "--reject", "auto")
    assert table.exit_code == 0, table.output
    assert table.stdout.count(": unknown (novelty") == 2

    closed = rows(run(*args, *queried, "--json"))
    assert None not in [row["class"] for row in closed] and "threshold" not in closed[0]

    task = fs.load("protonet-omniglot").adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    task.export_onnx(tmp_path / "task.onnx")
    task.save(tmp_path / "task")
    from_onnx = rows(run("classify", "--model", tmp_path / "task.onnx", *queried, "--reject", "auto", "--json"))
    from_task = rows(run("classify", "--task", tmp_path / "task", *queried, "--reject", "auto", "--json"))
    assert [r["class"] for r in from_onnx] == [r["class"] for r in from_task] == [r["class"] for r in answers]


def test_a_bad_reject_is_a_clean_error(examples_dir, queries):
    result = run("classify", "--model", "protonet-omniglot", "--support", examples_dir / "support",
                 "--query", queries[0], "--reject", "sometimes")  # fmt: skip
    assert_clean_error(result, "--reject takes 'auto' or a finite number")
