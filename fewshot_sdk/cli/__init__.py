"""The ``fewshot`` command line (typer)."""
