"""``python -m fewshot_sdk.train`` is ``fewshot train``: the entry point for ``torchrun`` on one or many nodes.

    torchrun --nproc-per-node 4 -m fewshot_sdk.train --data ... --out ... --meta-batch 8

Each process torchrun starts joins the group it describes in the environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``...); see :mod:`fewshot_sdk.train.distributed`.
"""

import typer

from fewshot_sdk.allocator import keep_freed_memory
from fewshot_sdk.cli.app import train

entry = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
entry.command(name="train")(train)

if __name__ == "__main__":
    keep_freed_memory()  # a worker process of our own (fewshot_sdk/allocator.py)
    entry()
