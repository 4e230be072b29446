"""Helpers shared by the CLI tests of every subpackage (importable: ``pythonpath = tests``)."""

from typer.testing import CliRunner

from fewshot_sdk.cli.app import app

runner = CliRunner()


def run(*args):
    """Invoke ``fewshot`` with these arguments (paths and numbers are stringified)."""
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, fragment):
    """A user error: exit status 2, one ``error:`` line naming ``fragment``, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output, result.output
