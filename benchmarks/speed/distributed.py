"""Meta-training throughput on one process vs several: episodes per second of ProtoNet and MAML.

Paired in one run, on the same machine: 1 process with all the threads against N
processes (gloo on CPU, nccl on GPUs) splitting the same meta-batch, each with
threads / N threads. Every setting takes ``--warmup`` meta-updates, then times
``--updates`` meta-updates between two barriers; the figure is meta_batch x updates /
seconds. Episodes are Omniglot's (the minimal background splits, 28x28), the
settings those of the bundled models: ProtoNet 60-way 1-shot 5 queries, MAML
20-way 1-shot 5 queries with one second-order inner step.

    python benchmarks/speed/distributed.py --data ../shared/data/omniglot --out benchmarks/results/distributed_cpu.md

The floor a second process can lift is the first's idle share: on a CPU the two
threads of one process already share each convolution, so N processes can only win
what one process leaves on the table (Python overhead, small kernels that do not
scale to two threads), and they pay one all_reduce of the gradients per update.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.omniglot import BACKGROUND_ZIPS, load_background_characters, split_characters
from fewshot_sdk.train import distributed

SETTINGS = {
    "protonet": ({}, (60, 1, 5)),
    "maml": ({"n_way": 20, "inner_steps": 1}, (20, 1, 5)),
}


def throughput(method: str, data: str, meta_batch: int, updates: int, warmup: int, rank: int, world: int) -> float:
    """Episodes per second of this process's share, timed between barriers (rank 0's figure is the run's)."""
    settings, (n_way, k_shot, q_queries) = SETTINGS[method]
    torch.manual_seed(0)
    device = torch.device(f"cuda:{rank}" if torch.cuda.is_available() else "cpu")
    learner = fs.create(method, **settings).to(device).train()
    sources = [Path(data) / name for name in BACKGROUND_ZIPS]
    train = split_characters(load_background_characters(sources, learner.preprocessor)).train
    sampler = EpisodeSampler(train, n_way, k_shot, q_queries, seed=rank)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    per_rank = meta_batch // world

    def update() -> None:
        episodes = [episode.to(device) for episode in sampler.episodes(per_rank)]
        learner.train_step(episodes, optimizer, reduce_gradients=distributed.average_gradients)

    for _ in range(warmup):
        update()
    distributed.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(updates):
        update()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    distributed.barrier()
    return meta_batch * updates / (time.perf_counter() - start)


def rank_main(rank: int, world: int, threads: int, rendezvous: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(threads)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    figure = throughput(args.method, args.data, args.meta_batch, args.updates, args.warmup, rank, world)
    if rank == 0:
        Path(out).write_text(f"{figure}")
    dist.destroy_process_group()


def run(world: int, threads: int, args: argparse.Namespace) -> float:
    if world == 1:
        torch.set_num_threads(threads)
        return throughput(args.method, args.data, args.meta_batch, args.updates, args.warmup, 0, 1)
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "figure")
        mp.start_processes(
            rank_main,
            args=(world, threads, os.path.join(folder, "rendezvous"), args, out),
            nprocs=world,
            start_method="spawn",
        )
        return float(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/omniglot")
    parser.add_argument("--methods", nargs="+", default=list(SETTINGS))
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of each pair")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    rows = []
    for method in args.methods:
        args.method = method
        single, multi = [], []
        for _ in range(args.rounds):  # interleaved, so drift in the machine's speed hits both alike
            single.append(run(1, threads, args))
            multi.append(run(args.processes, max(1, threads // args.processes), args))
        best_single, best_multi = max(single), max(multi)
        rows.append(f"| {method} | {best_single:.2f} | {best_multi:.2f} | {best_multi / best_single:.2f}x |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            f"| method | 1 process x {threads} threads (episodes/s) | {args.processes} processes x "
            f"{max(1, threads // args.processes)} thread (episodes/s) | ratio |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )
    report = (
        "# Meta-training throughput: one process vs several (`benchmarks/speed/distributed.py`)\n\n"
        f"Device: {device_name()}, {cores} cores; meta-batch {args.meta_batch}, {args.updates} timed "
        f"meta-updates after {args.warmup} warm-up, best of {args.rounds} interleaved rounds.\n\n"
        f"Command: `python benchmarks/speed/distributed.py --meta-batch {args.meta_batch} --updates {args.updates} "
        f"--processes {args.processes} --rounds {args.rounds}`\n\n{table}\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
