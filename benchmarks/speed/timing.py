"""Shared timing helpers for the benchmarks: warm-up, then the median of repeated runs."""

from __future__ import annotations

import platform
import random
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch


def median_seconds(fn: Callable[[], object], repeats: int = 200, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved_seconds(
    paths: Mapping[str, Callable[[], object]],
    rounds: int,
    warmup: int = 20,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of every call of each path, measured in rounds that call every path once.

    Paired by round, so drift in machine load (a training job on the other core) hits all
    paths alike. The order is shuffled every round (seeded): a call runs measurably slower
    right after a heavy one (a torch forward leaves the caches full of its own data), so no
    path may always follow the same neighbour. Rotating a fixed order would not do that.
    ``clock``: wall time by default; ``time.process_time`` counts this process's CPU seconds
    instead, which other jobs contending for the cores do not stretch (for one-thread runs on a
    machine with more runnable jobs than cores).
    """
    order = list(paths.items())
    for _ in range(warmup):
        for _, fn in order:
            fn()
    shuffler = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name, fn in order:
            start = clock()
            fn()
            samples[name].append(clock() - start)
    return samples


def interleaved_groups(
    groups: Sequence[Mapping[str, Callable[[], object]]],
    rounds: int,
    blocks: int = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """:func:`interleaved_seconds` within each group, the groups taking turns in ``blocks`` blocks of rounds.

    For paths on different engines (torch, onnxruntime): each is compared, round by round, with
    the paths of its own engine only, as a deployment that uses one engine runs it, while the
    blocks spread machine drift over every group. Calling the engines alternately would charge
    each call for the caches the other engine left cold.
    """
    samples: dict[str, list[float]] = {name: [] for group in groups for name in group}
    for block in range(blocks):
        for group in groups:
            timed = interleaved_seconds(group, max(1, rounds // blocks), warmup=5, seed=block, clock=clock)
            for name, times in timed.items():
                samples[name].extend(times)
    return samples


def own_blocks(
    paths: Mapping[str, Callable[[], object]],
    rounds: int,
    blocks: int = 4,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """:func:`interleaved_groups` with each path a group of its own: ``rounds`` calls of each, in alternating blocks.

    For calls that allocate and free tens of MiB or more: their time depends on the heap the previous
    call left, so each path is timed after its own calls, as a user repeating it runs it, while the
    blocks spread drift in machine load over all. Alternating call by call once timed a folded network
    at 1.5x its own steady-state time (14.8 against 9.6 ms), on the heap the unfolded one had shaped
    (``results/batchnorm_folding_cpu.md``, "call by call").
    """
    return interleaved_groups([{name: fn} for name, fn in paths.items()], rounds, blocks, clock)


def paired_ratio(samples: Mapping[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of ``numerator``'s time over ``denominator``'s in the same round."""
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator], strict=True))


def minor_faults() -> int:
    """Pages this process has touched for the first time so far (each one zero-filled by the kernel)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} torch threads)"
    return f"CPU: {platform.processor() or platform.machine()}"


def report(text: str, out: Path | None) -> None:
    """Print a benchmark's result, and write it to ``out`` (ending in one newline) when given."""
    print(text)
    if out is not None:
        out.write_text(text.rstrip("\n") + "\n")
