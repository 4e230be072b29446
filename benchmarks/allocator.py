"""Meta-training with glibc's default malloc against ``fs.keep_freed_memory()`` (what the ``fewshot`` command sets).

Each cell runs in fresh processes, since glibc's settings hold for a whole process: one
meta-iteration of ``--tasks`` Omniglot-sized tasks (5-way 1-shot, 15 queries a class, Conv4 28x28,
1 inner step for the gradient methods), 2 warm-up iterations then the median of ``--iterations``,
with the minor page faults (fresh pages, zero-filled by the kernel) an iteration costs. The
settings alternate process by process, so drift in machine load hits both alike.

    OMP_NUM_THREADS=1 python benchmarks/allocator.py [--processes 3] [--out benchmarks/results/allocator_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inner_loop import N_WAY, make_episode
from timing import device_name, minor_faults, report

import fewshot_sdk as fs

METHODS = {"maml (second order)": ("maml", "support"), "fomaml": ("fomaml", "support"), "protonet": ("protonet", None)}


def one_process(method: str, tasks: int, iterations: int, keep: bool) -> list[float]:
    """In this fresh process: seconds and page faults per meta-iteration of ``method``."""
    if keep and not fs.keep_freed_memory():
        raise SystemExit("keep_freed_memory() did not take effect here (not glibc, or MALLOC_* already set)")
    torch.set_num_threads(1)
    name, bn = METHODS[method]
    torch.manual_seed(0)
    options = {"n_way": N_WAY, "inner_lr": 0.4, "inner_steps": 1, "bn": bn} if bn else {}
    learner = fs.create(name, **options).train()
    optimizer = torch.optim.Adam(learner.parameters(), 1e-3)
    episodes = [make_episode(i) for i in range(tasks)]
    seconds, faults = [], []
    for index in range(2 + iterations):
        before, start = minor_faults(), time.perf_counter()
        learner.train_step(episodes, optimizer)
        if index >= 2:
            seconds.append(time.perf_counter() - start)
            faults.append(minor_faults() - before)
    return [statistics.median(seconds), statistics.median(faults)]


def in_fresh_process(method: str, args: argparse.Namespace, keep: bool) -> list[float]:
    command = [sys.executable, __file__, "--child", method, "--tasks", str(args.tasks)]
    command += ["--iterations", str(args.iterations)] + (["--keep"] if keep else [])
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per cell")
    parser.add_argument("--tasks", type=int, default=8, help="tasks per meta-iteration")
    parser.add_argument("--iterations", type=int, default=6, help="timed meta-iterations per process")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_process(args.child, args.tasks, args.iterations, args.keep)))
        return
    lines = [
        "# Meta-training with glibc's default malloc and with `fs.keep_freed_memory()`\n",
        f"device: {device_name()}; torch {torch.__version__}; one meta-iteration of {args.tasks} tasks (5-way 1-shot, "
        f"15 queries a class, Conv4 28x28); each cell the median over {args.processes} fresh processes (alternating) "
        f"of each one's median of {args.iterations} iterations after 2 warm-up ones\n",
        "| method | default malloc (s) | kept (s) | kept / default | page faults an iteration: default / kept |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for method in METHODS:
        runs: dict[bool, list[list[float]]] = {False: [], True: []}
        for repeat in range(args.processes):
            for keep in (False, True) if repeat % 2 == 0 else (True, False):
                runs[keep].append(in_fresh_process(method, args, keep))
        seconds = {keep: statistics.median(r[0] for r in figures) for keep, figures in runs.items()}
        faults = {keep: statistics.median(r[1] for r in figures) for keep, figures in runs.items()}
        line = (
            f"| {method} | {seconds[False]:.3f} | {seconds[True]:.3f} | {seconds[True] / seconds[False]:.2f}x | "
            f"{faults[False]:.0f} / {faults[True]:.0f} |"
        )
        print(line, flush=True)
        lines.append(line)
    lines += ["", f"command: `OMP_NUM_THREADS=1 python benchmarks/allocator.py --processes {args.processes}`"]
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
