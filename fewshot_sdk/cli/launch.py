"""``--nproc-per-node N``: run a CLI command in N processes through torch.distributed's elastic launcher.

This is what ``torchrun --nproc-per-node N`` does, started from inside ``fewshot``: a single-node rendezvous on a
free local port, N spawned workers with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set, no restarts, and the whole
group taken down as soon as one worker fails. Each worker runs the same command function with the options already
parsed here; a worker's one-line error comes back to this process, which prints it with the rank that raised it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fewshot_sdk.errors import FewShotError

#: Where workers started by :func:`launch` write their one-line errors (unset under plain torchrun).
ERROR_DIR = "FEWSHOT_RANK_ERRORS"


def check_processes(nproc: int, device: str) -> None:
    """Refuse more processes than the devices they would run on."""
    import torch

    from fewshot_sdk.train.distributed import uses_cuda

    if uses_cuda(device):
        available = torch.cuda.device_count()
        if nproc > available:
            raise FewShotError(f"--nproc-per-node {nproc} needs {nproc} GPUs, but {available} are visible")
        return
    cores = os.cpu_count() or 1
    if nproc > cores:
        raise FewShotError(f"--nproc-per-node {nproc} is more than this machine's {cores} CPU cores")


def launch(target: str, options: dict[str, Any], nproc: int) -> None:
    """Run ``target(**options)`` in ``nproc`` processes; raise the first failing rank's error. ``target`` is
    ``"module:function"`` (the CLI passes ``fewshot_sdk.cli.app:train``)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures are reported below
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    with tempfile.TemporaryDirectory(prefix="fewshot-ranks-") as errors:
        previous = os.environ.get(ERROR_DIR)
        os.environ[ERROR_DIR] = errors
        try:
            elastic_launch(config, run_worker)(target, options)
        except ChildFailedError as exc:
            raise FewShotError(failure_report(Path(errors), exc.failures)) from None
        finally:
            if previous is None:
                os.environ.pop(ERROR_DIR, None)
            else:
                os.environ[ERROR_DIR] = previous


def failure_report(errors: Path, failures: dict[int, Any]) -> str:
    """The one-line error of the lowest rank that wrote one; else which rank exited first, and how.

    A rank that raised takes the group down, so the others fail too (a collective whose peer is gone); their failures
    say nothing about the cause. Every rank's file is read, not only those of the ranks the launcher saw fail: the
    rank that raised can still be finishing its exit when a peer's failure is noticed, and then it is stopped, not
    failed (the two-rank failure test saw this 2 runs in 10).
    """
    written = sorted(errors.glob("rank*.txt"), key=lambda path: int(path.stem.removeprefix("rank")))
    if written:
        return f"rank {written[0].stem.removeprefix('rank')}: {written[0].read_text().strip()}"
    rank = min(failures, key=lambda r: failures[r].timestamp)
    return f"rank {rank} exited with status {failures[rank].exitcode}; its output is above"


def run_worker(target: str, options: dict[str, Any]) -> None:
    """One rank: the target function (a CLI command without its error wrapper); its one-line error is written
    for the launcher, which prints it."""
    import importlib
    import sys

    import torch
    import typer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # N processes share the cores
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    function = getattr(function, "__wrapped__", function)
    try:
        function(**options)
    except FewShotError as exc:
        errors = os.environ.get(ERROR_DIR)
        if errors:
            (Path(errors) / f"rank{os.environ.get('RANK', '0')}.txt").write_text(str(exc))
        else:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:  # a flag error the command reported itself (its line is on stderr)
        sys.exit(exc.exit_code)
