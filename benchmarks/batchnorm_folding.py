"""Inference with batch norm folded into the convolutions (the SDK's default) against the same network unfolded.

Four workloads, each a pair of paths on the same weights in this one process:

- ``maml-omniglot`` (5-way, 5 steps of alpha=0.4 on one glyph per class): its baked task network on
  75 glyphs and on 1, folded (``adapted_network``) or not;
- ``protonet-omniglot``: ``task.predict`` of 75 glyphs and of 1, ``backbone.fold_batchnorm`` on or off;
- ``protonet-photos``: the backbone's embedding of 16 photos at 192x192, folded or not (what
  ``adapt`` and ``predict`` run per chunk of 16).

The two paths take turns in blocks of calls (:func:`timing.own_blocks`: 8 blocks, 5 warm-up
calls each), so that each is timed in its own steady state, as a user calling one network
over and over runs it, while drift in machine load spreads over both. The time of a large forward
depends on the heap the previous call left: alternating the two call by call put the folded
network on the heap the unfolded one had just shaped, and it ran 1.5x slower there than after
itself (Intel Xeon, 75 glyphs: 14.8 against 9.6 ms in ``batchnorm_folding_cpu.md``). That
figure is given too ("call by call"), for the record.

Also given per call: the minor page faults (memory the allocator took fresh from the kernel,
zero-filled), and the largest difference between the two paths' outputs.

    OMP_NUM_THREADS=1 python benchmarks/batchnorm_folding.py [--rounds 80]
        [--out benchmarks/results/batchnorm_folding_cpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from maml_adapt import five_way, glyph_task
from timing import device_name, interleaved_seconds, minor_faults, own_blocks, report

import fewshot_sdk as fs
import fewshot_sdk.methods._gradient_learner as gradient_learner
from fewshot_sdk.models.backbones import Backbone

STEPS = 5
Pair = tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]


def toggled(backbone: Backbone, fold: bool, run: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        backbone.fold_batchnorm = fold
        with torch.inference_mode():
            return run()

    return call


def maml_pairs(data: Path) -> dict[str, Pair]:
    learner = five_way("support")
    support_x, support_y, query_x = glyph_task(learner, data)
    task = learner.adapt(fs.SupportSet.from_tensors(support_x, support_y), steps=STEPS)
    state = task.state
    folded = gradient_learner.adapted_network(learner, state)
    with mock.patch.object(gradient_learner, "fold_batchnorm_", lambda network: 0):
        unfolded = gradient_learner.adapted_network(learner, state)

    def on(network: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with torch.inference_mode():
                return network(x)

        return call

    return {
        f"maml-omniglot task network, {n} glyph(s)": (on(folded, query_x[:n]), on(unfolded, query_x[:n]))
        for n in (len(query_x), 1)
    }


def protonet_pairs(data: Path) -> dict[str, Pair]:
    learner = fs.load("protonet-omniglot")
    support_x, support_y, query_x = glyph_task(learner, data)
    task = learner.adapt(fs.SupportSet.from_tensors(support_x, support_y))
    backbone = learner.backbone
    pairs = {}
    for n in (len(query_x), 1):
        x = query_x[:n]
        pairs[f"protonet-omniglot predict, {n} glyph(s)"] = (
            toggled(backbone, True, lambda x=x: task.predict(x).probs),
            toggled(backbone, False, lambda x=x: task.predict(x).probs),
        )
    return pairs


def photo_pairs() -> dict[str, Pair]:
    backbone = fs.load("protonet-photos").backbone.eval()
    x = torch.randn(16, *backbone.input_shape, generator=torch.Generator().manual_seed(0))
    return {
        f"protonet-photos backbone, 16 photos at {x.shape[-1]}": (
            toggled(backbone, True, lambda: backbone(x)),
            toggled(backbone, False, lambda: backbone(x)),
        )
    }


def measure(name: str, pair: Pair, rounds: int) -> str:
    folded, unfolded = pair
    difference = float((folded() - unfolded()).abs().max())
    scale = float(unfolded().abs().max())
    faults = {}
    for label, fn in (("folded", folded), ("unfolded", unfolded)):
        fn()
        before = minor_faults()
        for _ in range(5):
            fn()
        faults[label] = (minor_faults() - before) / 5
    blocks = own_blocks({"folded": folded, "unfolded": unfolded}, rounds, blocks=8)
    ms = {label: 1e3 * statistics.median(times) for label, times in blocks.items()}
    alternating = interleaved_seconds({"folded": folded, "unfolded": unfolded}, rounds, warmup=3)
    call_by_call = {label: 1e3 * statistics.median(times) for label, times in alternating.items()}
    line = (
        f"| {name} | {ms['folded']:.3f} | {ms['unfolded']:.3f} | {ms['folded'] / ms['unfolded']:.2f}x | "
        f"{call_by_call['folded']:.3f} / {call_by_call['unfolded']:.3f} | "
        f"{faults['folded']:.0f} / {faults['unfolded']:.0f} | {difference:.1e} (of {scale:.2g}) |"
    )
    print(line, flush=True)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="timed calls of each path per workload")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/omniglot")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = {**maml_pairs(args.data), **protonet_pairs(args.data), **photo_pairs()}
    lines = [
        "# Batch norm folded into the convolutions for inference, against the same network unfolded\n",
        f"device: {device_name()}; torch {torch.__version__}; {args.rounds} calls of each path per workload "
        "in 8 alternating blocks, medians\n",
        "| workload | folded ms | unfolded ms | folded / unfolded | call by call: folded / unfolded ms "
        "| minor page faults per call (folded / unfolded) | largest output difference |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, pair in pairs.items():
        rounds = args.rounds if "photos" not in name else max(4, args.rounds // 4)
        lines.append(measure(name, pair, rounds))
    lines += ["", f"command: `OMP_NUM_THREADS=1 python benchmarks/batchnorm_folding.py --rounds {args.rounds}`"]
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
