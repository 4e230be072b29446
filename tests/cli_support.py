"""Helpers shared by the CLI tests of every subpackage (importable: ``pythonpath = tests``)."""

import subprocess
import sys

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


IMPORTS_PROBE = """
import sys
from fewshot_sdk.cli.app import app
try:
    app({args!r}, standalone_mode=False)
finally:
    print("IMPORTED", *[name for name in {modules!r} if name in sys.modules])
"""


def imports_of(args, modules):
    """Which of ``modules`` the command ``fewshot ARGS`` imports, run in a fresh interpreter."""
    probe = IMPORTS_PROBE.format(args=list(args), modules=tuple(modules))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1].split()
    assert last[0] == "IMPORTED", result.stdout
    return set(last[1:])
