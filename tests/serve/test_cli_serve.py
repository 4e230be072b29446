"""``fewshot serve`` on the command line: one ``error:`` line for what it refuses, FastAPI imported only by it."""

from __future__ import annotations

import importlib.util

from cli_support import assert_clean_error, imports_of, run

WEB = ("fastapi", "uvicorn", "starlette", "python_multipart")


def web_imports(*args: str) -> set[str]:
    return imports_of(args, WEB)


def test_other_commands_do_not_import_the_web_stack():
    assert web_imports("--help") == set()
    assert web_imports("models") == set()
    assert web_imports("serve", "--help") == set()


def test_a_missing_serve_extra_is_one_line_naming_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    result = run("serve")
    assert_clean_error(result, 'pip install -c constraints.txt -e ".[serve]"')
    assert result.output.count("error:") == 1


def test_binding_beyond_loopback_without_a_key_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("FEWSHOT_API_KEY", raising=False)
    assert_clean_error(run("serve", "--tasks", tmp_path, "--host", "0.0.0.0"), "give an API key")
    assert_clean_error(run("serve", "--tasks", tmp_path, "--api-key", "short"), "16 or more")


def test_an_unknown_model_is_one_line(tmp_path):
    assert_clean_error(run("serve", "--tasks", tmp_path, "--model", "no-such-model"), "no-such-model")
    result = run("serve", "--tasks", tmp_path, "--model", "no-such-model", "--workers", "2")
    assert_clean_error(result, "no-such-model")
