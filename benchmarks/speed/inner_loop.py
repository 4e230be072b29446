"""Benchmark the optimisation-based methods' inner loop against a learn2learn-style clone/adapt loop.

Two measurements on CPU (a Conv4 on 28x28 Omniglot-sized inputs, 5-way 1-shot,
15 queries per class):

1. one meta-iteration (forward, inner loop, query loss, backward) over a meta-batch
   of ``--tasks`` tasks (32 by default) for MAML second-order, first-order MAML and
   Reptile (5 inner steps), with the peak resident memory of a fresh process;
2. adaptation latency: ``adapt`` with 5 steps on one 5-way 1-shot support set.

The baseline is the learn2learn pattern, written here (no dependency): clone the
module for each task (every parameter ``p.clone()``, so the clone stays in the
graph), then for each step replace the clone's parameters in place by
``p - lr * grad`` (``update_module``). Ours is ``torch.func.functional_call`` over
a dict of tensors (``fewshot_sdk.methods.inner_loop.inner_loop``).

    python benchmarks/speed/inner_loop.py --out benchmarks/results/inner_loop_cpu.md

Each configuration runs in its own subprocess so that ``ru_maxrss`` is its own peak.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name, own_blocks, report

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.models.backbones import Conv4

N_WAY, K_SHOT, QUERIES = 5, 1, 15


def make_episode(seed: int) -> Episode:
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(N_WAY * K_SHOT, 1, 28, 28, generator=g)
    query = torch.randn(N_WAY * QUERIES, 1, 28, 28, generator=g)
    labels = torch.arange(N_WAY)
    return Episode(support, labels.repeat_interleave(K_SHOT), query, labels.repeat_interleave(QUERIES), N_WAY)


# ------------------------------------------------------------------ learn2learn-style baseline
def clone_module(module: nn.Module) -> nn.Module:
    """learn2learn's ``clone_module``: a structural copy whose parameters are differentiable clones."""
    clone = copy.copy(module)
    clone._parameters = {k: (p.clone() if p is not None else None) for k, p in module._parameters.items()}
    clone._buffers = dict(module._buffers)
    clone._modules = {k: clone_module(m) for k, m in module._modules.items()}
    return clone


def update_module(module: nn.Module, updates: dict[nn.Module, list[torch.Tensor]], lr: float) -> None:
    """learn2learn's ``update_module``: overwrite each parameter with ``p - lr * g`` (not a leaf any more)."""
    for sub in module.modules():
        for name, g in zip(list(sub._parameters), updates.get(sub, []), strict=False):
            sub._parameters[name] = sub._parameters[name] - lr * g


def baseline_adapt(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, second_order: bool):
    learner = clone_module(model)
    for _ in range(steps):
        owners = [(m, list(m._parameters.values())) for m in learner.modules() if m._parameters]
        flat = [p for _, ps in owners for p in ps]
        grads = torch.autograd.grad(F.cross_entropy(learner(x), y), flat, create_graph=second_order)
        updates, i = {}, 0
        for m, ps in owners:
            updates[m] = list(grads[i : i + len(ps)])
            i += len(ps)
        update_module(learner, updates, lr)
    return learner


class PlainConv4(Conv4):
    """Conv4 as the peers define it (learn2learn's ``OmniglotCNN``): a plain ``nn.Sequential`` forward, NCHW."""

    forward = nn.Sequential.forward


def plain_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (the same weights) whose every Conv4 is a :class:`PlainConv4`."""
    plain = copy.deepcopy(module)
    for child in plain.modules():
        if isinstance(child, Conv4):
            child.__class__ = PlainConv4
    return plain


class BaselineNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = Conv4(1, 64, 4), nn.Linear(64, N_WAY)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


# ------------------------------------------------------------------ one configuration, in a subprocess
def run_one(kind: str, impl: str, tasks: int, repeats: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    episodes = [make_episode(i) for i in range(tasks)]
    times = []
    if kind == "sinusoid":  # MAML on MLP regression, 25 tasks: vmap-batched meta-batch vs a loop over tasks
        from fewshot_sdk.data.sinusoid import SinusoidTasks

        learner = fs.create("maml", backbone="mlp", task="regression", inner_lr=0.01, inner_steps=steps).train()
        learner.vmap_tasks = impl == "vmap"
        optimizer = torch.optim.Adam(learner.parameters(), 1e-3)
        batch = SinusoidTasks(10, 10, seed=0).episodes(tasks)
        for r in range(repeats + 1):
            start = time.perf_counter()
            learner.train_step(batch, optimizer)
            if r:
                times.append(time.perf_counter() - start)
    elif impl == "ours":
        method = {"fomaml": "fomaml", "reptile": "reptile"}.get(kind, "maml")
        lr = 1e-3 if method == "reptile" else 0.4
        learner = fs.create(method, n_way=N_WAY, inner_lr=lr, inner_steps=steps, test_steps=steps)
        optimizer = torch.optim.Adam(learner.parameters(), 1e-3)
        for r in range(repeats + 1):
            start = time.perf_counter()
            if kind == "adapt":
                learner.eval()
                learner.adapt_tensors(episodes[0].support_x, episodes[0].support_y, N_WAY, steps=steps)
            else:
                learner.train()
                learner.train_step(episodes, optimizer)
            if r:
                times.append(time.perf_counter() - start)
    else:
        model = BaselineNet()
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        for r in range(repeats + 1):
            start = time.perf_counter()
            if kind == "adapt":
                e = episodes[0]
                with torch.no_grad(), torch.enable_grad():
                    baseline_adapt(model, e.support_x, e.support_y, steps, 0.4, second_order=False)
            else:
                optimizer.zero_grad()
                for e in episodes:
                    clone = baseline_adapt(model, e.support_x, e.support_y, steps, 0.4, kind == "maml-so")
                    (F.cross_entropy(clone(e.query_x), e.query_y) / tasks).backward()
                optimizer.step()
            if r:
                times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_rss_mib": peak_mib}


def saved_graph_mib(loss: Callable[[], torch.Tensor]) -> float:
    """MiB of the distinct storages autograd saves for the backward of ``loss()``: the graph's memory, which a
    process's peak RSS blurs with the allocator's and the interpreter's."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss()
    return sum(storages.values()) / 2**20


def paired_meta_iterations(
    kind: str, tasks: int, rounds: int, steps: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Ours and the learn2learn-style loop taking turns at meta-iterations in one process (time only).

    Ours runs in both batch-norm modes: ``ours`` is the default ``bn="support"`` (queries normalised
    with the support statistics under theta', which costs a support forward at theta' and its
    backward), ``ours-transductive`` normalises queries by their own batch, the work the loop does.
    The loop runs twice: on the SDK's Conv4 (``l2l-style``: the same network, so the ratio is the
    inner-loop implementation's alone) and on :class:`PlainConv4` (``l2l-style-plain``: the NCHW
    network a learn2learn user holds). The paths take turns in blocks of meta-iterations
    (:func:`timing.own_blocks`: 4 blocks, 5 warm-up iterations each), so that a change in
    machine load hits all alike while each is timed on the heap its own iterations leave: a
    meta-iteration allocates and frees a few hundred MiB of graph, and alternating paths call by call
    timed each on the heap another had shaped (measured: the same path 1.11x or 1.01x learn2learn's
    time from one run to the next). Returns each path's seconds, and the memory of one task's graph
    (:func:`saved_graph_mib`).
    """
    torch.manual_seed(0)
    torch.set_num_threads(1)
    episodes = [make_episode(i) for i in range(tasks)]
    method = "fomaml" if kind == "fomaml" else "maml"

    learners = {}

    def ours(bn: str) -> Callable[[], None]:
        torch.manual_seed(0)
        learner = learners[bn] = fs.create(method, n_way=N_WAY, inner_lr=0.4, inner_steps=steps, bn=bn).train()
        optimizer = torch.optim.Adam(learner.parameters(), 1e-3)
        return lambda: learner.train_step(episodes, optimizer)

    def baseline(model: nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)

        def run() -> None:
            optimizer.zero_grad()
            for e in episodes:
                clone = baseline_adapt(model, e.support_x, e.support_y, steps, 0.4, kind == "maml-so")
                (F.cross_entropy(clone(e.query_x), e.query_y) / tasks).backward()
            optimizer.step()

        return run

    model = BaselineNet()
    paths = {
        "ours": ours("support"),
        "ours-transductive": ours("transductive"),
        "l2l-style": baseline(model),
        "l2l-style-plain": baseline(plain_copy(model)),
    }
    first = episodes[0]

    def baseline_loss(network: nn.Module) -> torch.Tensor:
        clone = baseline_adapt(network, first.support_x, first.support_y, steps, 0.4, kind == "maml-so")
        return F.cross_entropy(clone(first.query_x), first.query_y)

    memory = {
        "ours": saved_graph_mib(lambda: learners["support"].episode_loss(first)[0]),
        "ours-transductive": saved_graph_mib(lambda: learners["transductive"].episode_loss(first)[0]),
        "l2l-style": saved_graph_mib(lambda: baseline_loss(model)),
        "l2l-style-plain": saved_graph_mib(lambda: baseline_loss(plain_copy(model))),
    }
    return own_blocks(paths, rounds), memory


def paired_table(times: dict[str, list[float]], memory: dict[str, float]) -> list[str]:
    """Median seconds of each path, its ratio to each baseline's median, and graph memory."""
    baselines = ("l2l-style", "l2l-style-plain")
    lines = [
        "| path | s per meta-iteration | / l2l-style | / l2l-style-plain | graph MiB (one task) | / l2l-style |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, seconds in times.items():
        ratios = [statistics.median(seconds) / statistics.median(times[base]) for base in baselines]
        mib = f"{memory[name]:.2f} | {memory[name] / memory['l2l-style']:.3f}x"
        lines.append(f"| {name} | {statistics.median(seconds):.3f} | {ratios[0]:.2f}x | {ratios[1]:.2f}x | {mib} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1, help="inner steps in the meta-iteration benchmark")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--paired", metavar="KIND", help="maml-so or fomaml: time ours against l2l-style in one process, alternating"
    )
    parser.add_argument("--rounds", type=int, default=8, help="timed meta-iterations of each path in --paired")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "IMPL", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paired:
        times, memory = paired_meta_iterations(args.paired, args.tasks, args.rounds, args.steps)
        lines = [
            f"# {args.paired}: one meta-iteration of {args.tasks} tasks, {args.steps} inner step(s), ours against "
            "the learn2learn pattern",
            "",
            f"device: {device_name()}; torch {torch.__version__}; {args.rounds} meta-iterations of each path in one "
            "process, in 4 alternating blocks after 5 warm-up iterations each; medians, and ratios of medians",
            "",
            "`l2l-style` runs on the SDK's Conv4 (the same network), `l2l-style-plain` on a plain NCHW Conv4 (the "
            "network a learn2learn user holds). Both normalise queries by their own batch, as `ours-transductive` "
            "does; `ours` (the default) normalises them with the support statistics under the adapted weights.",
            "",
            "Graph MiB: the distinct storages autograd saves for one task's query-loss backward.",
            "",
            *paired_table(times, memory),
            "",
            f"command: `python benchmarks/speed/inner_loop.py --paired {args.paired} --tasks {args.tasks} --steps "
            f"{args.steps} --rounds {args.rounds}`",
        ]
        report("\n".join(lines), args.out)
        return
    if args.one:
        kind, impl, steps = args.one
        print(json.dumps(run_one(kind, impl, args.tasks, args.repeats, int(steps))))
        return
    rows = []
    plan = [(k, i, args.steps) for k in ("maml-so", "fomaml") for i in ("ours", "l2l-style")]
    plan += [("reptile", "ours", 5), ("adapt", "ours", 5), ("adapt", "l2l-style", 5)]
    plan += [("sinusoid", "vmap", 1), ("sinusoid", "loop", 1)]
    for kind, impl, steps in plan:
        tasks = {"adapt": 1, "sinusoid": 25}.get(kind, args.tasks)
        repeats = 10 if kind in ("adapt", "sinusoid") else args.repeats
        cmd = [sys.executable, __file__, "--tasks", str(tasks), "--repeats", str(repeats)]
        cmd += ["--one", kind, impl, str(steps)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rows.append((kind, impl, steps, tasks, result))
        print(kind, impl, steps, tasks, result, flush=True)
    lines = [
        "# Inner-loop benchmark (CPU)",
        "",
        f"`python benchmarks/speed/inner_loop.py --tasks {args.tasks} --repeats {args.repeats} "
        f"--steps {args.steps}` on "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, shared machine.",
        "Conv4 (64 filters), 5-way 1-shot, 15 queries/class. Meta-iteration = inner loop + query loss + backward "
        "+ optimiser step over all tasks (a loop over tasks: Conv4 has batch norm, which our vmap path does not "
        "batch). Adaptation = 5 steps on one support set, no graph kept. Sinusoid = one MAML meta-iteration on "
        "the 1-40-40-1 MLP, 25 tasks, K=10. Peak = ru_maxrss of a fresh process.",
        "",
        "| what | implementation | inner steps | tasks | median s | min s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, impl, steps, tasks, r in rows:
        timing = f"{r['median_s']:.3f} | {r['min_s']:.3f} | {r['peak_rss_mib']:.0f}"
        lines.append(f"| {kind} | {impl} | {steps} | {tasks} | {timing} |")
    text = "\n".join(lines) + "\n"
    report(text, args.out)


if __name__ == "__main__":
    main()
