"""Seconds per fine-tuned task on CPU, where they go, and the floor of the part that repeats.

``adapt(support, finetune=...)`` of the photo model on the example photos (5 x 1 and 5 x 5), at 1 and 2
threads, median of ``--repeats`` after a warm-up. Then its parts, timed alone: the random views; the frozen
prefix, run once per view; one Adam step of the tuned tail (forward and backward over every view). The
floor of a step is its FLOPs (forward ~ multiply-adds x 2, backward ~ twice the forward) over the
measured rate of one large matrix product on the same threads, the best this CPU does in torch.

    python benchmarks/speed/finetune_speed.py --out benchmarks/results/finetune_speed_cpu.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared timing.py
from timing import device_name, median_seconds, report

import fewshot_sdk as fs
from fewshot_sdk.data.augment import random_views
from fewshot_sdk.methods.finetuning import (
    AUTO_FULL_FROM_SHOTS,
    FineTuneSettings,
    TunedTail,
    auto_settings,
    first_tuned_stage,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "photos" / "support"


def tail_flops(tail: TunedTail, prefix: torch.Tensor) -> float:
    """Multiply-adds x 2 of the tail's convolutions and linear layers on ``prefix``, forward only."""
    total = 0.0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2.0 * output.numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            total += 2.0 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in tail.modules()]
    with torch.no_grad():
        tail(prefix)
    for hook in hooks:
        hook.remove()
    return total


def matmul_rate() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / median_seconds(lambda: a @ b, repeats=20, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    learner = fs.load("protonet-photos")
    classes = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
    settings: FineTuneSettings = auto_settings(5)
    lines = [
        "# Test-time fine-tuning: seconds per task (issue 26)",
        "",
        f"Machine: {device_name()}, torch {torch.__version__}. `finetune='auto'`: {settings.model_dump()} from "
        f"{AUTO_FULL_FROM_SHOTS} shots, {auto_settings(1).model_dump()} below.",
        f"`python benchmarks/speed/finetune_speed.py --repeats {args.repeats} "
        f"--out benchmarks/results/finetune_speed_cpu.md` (median of {args.repeats} after a warm-up)",
        "",
        "| support | threads | adapt, no fine-tuning (s) | adapt, finetune='auto' (s) |",
        "| --- | --- | --- | --- |",
    ]
    for shots in (1, 5):
        support = fs.SupportSet.from_mapping({c.name: sorted(c.iterdir())[:shots] for c in classes})
        for threads in (1, 2):
            torch.set_num_threads(threads)
            plain = median_seconds(lambda support=support: learner.adapt(support), args.repeats, 1)
            tuned = [0.0] * args.repeats
            learner.adapt(support, finetune="auto")  # warm-up
            for i in range(args.repeats):
                start = time.perf_counter()
                learner.adapt(support, finetune="auto")
                tuned[i] = time.perf_counter() - start
            lines.append(f"| 5 x {shots} | {threads} | {plain:.2f} | {statistics.median(tuned):.2f} |")
            print(lines[-1], flush=True)
    x, _ = fs.SupportSet.from_mapping({c.name: sorted(c.iterdir())[:5] for c in classes}).to_tensors(
        learner.preprocessor
    )
    backbone = learner.frozen_or_self().backbone
    first = first_tuned_stage(backbone, settings.stages)
    lines += ["", "Parts of a 5 x 5 fine-tuning, alone:", "", "| part | threads | seconds | floor (s) |"]
    lines.append("| --- | --- | --- | --- |")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rate = matmul_rate()
        generator = torch.Generator().manual_seed(0)
        views = random_views(x, learner.preprocess_config, settings.views, settings.flips, generator)
        seconds_views = median_seconds(
            lambda g=generator: random_views(x, learner.preprocess_config, settings.views, settings.flips, g), 3, 1
        )
        with torch.no_grad():
            prefix = backbone.run_stages(views, 0, first)
            seconds_prefix = median_seconds(lambda v=views: backbone.run_stages(v, 0, first), 3, 1)
        tail = TunedTail(backbone, first, backbone.flatten).requires_grad_(True)
        flops = 3 * tail_flops(tail, prefix)

        def step(tail: TunedTail = tail, prefix: torch.Tensor = prefix) -> None:
            tail.zero_grad(set_to_none=True)
            tail(prefix).sum().backward()

        seconds_step = median_seconds(step, 5, 1)
        lines.append(f"| {settings.views} views of 25 photos | {threads} | {seconds_views:.3f} | |")
        lines.append(f"| prefix, stages 0..{first - 1}, once | {threads} | {seconds_prefix:.2f} | |")
        lines.append(
            f"| one step of stages {first}.. ({flops / 1e9:.1f} GFLOP) | {threads} | {seconds_step:.3f} | "
            f"{flops / rate:.3f} at {rate / 1e9:.0f} GFLOP/s |"
        )
        print("\n".join(lines[-3:]), flush=True)
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
