"""What the public API costs on top of the bare math, for one 5-way 5-shot 28x28 episode.

Both sides do the same work: embed 25 support and 75 query images with Conv4,
average prototypes, score and softmax. The API side goes through
``SupportSet.from_tensors`` -> ``adapt`` -> ``predict`` (validation, NaN checks,
Prediction). Target: the API adds <= 10%.

    python benchmarks/speed/api_overhead.py [--repeats 300] [--out benchmarks/results/api_overhead_cpu.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name, median_seconds, report

import fewshot_sdk as fs
from fewshot_sdk.methods.base import class_means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--model", default="protonet-omniglot")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    learner = fs.load(args.model)
    n_way, k_shot, queries = 5, 5, 15
    support_x = torch.randn(n_way * k_shot, 1, 28, 28)
    support_y = torch.arange(n_way).repeat_interleave(k_shot)
    query_x = torch.randn(n_way * queries, 1, 28, 28)
    backbone = learner.backbone

    def bare() -> torch.Tensor:
        with torch.inference_mode():
            prototypes = class_means(backbone(support_x), support_y, n_way)
            embedded = backbone(query_x)
            logits = -((embedded[:, None, :] - prototypes[None]) ** 2).sum(-1)
            return logits.softmax(-1)

    def through_api() -> torch.Tensor:
        task = learner.adapt(fs.SupportSet.from_tensors(support_x, support_y))
        return task.predict(query_x).probs

    torch.testing.assert_close(bare(), through_api(), rtol=1e-4, atol=1e-5)
    # interleave the two measurements so drift in machine load hits both alike
    bare_times, api_times = [], []
    for _ in range(5):
        bare_times.append(median_seconds(bare, repeats=args.repeats // 5))
        api_times.append(median_seconds(through_api, repeats=args.repeats // 5))
    bare_s, api_s = sorted(bare_times)[2], sorted(api_times)[2]
    overhead = api_s / bare_s - 1
    lines = [
        "# API overhead: one 5-way 5-shot episode (25 support + 75 query images, 28x28, Conv4)\n",
        f"device: {device_name()}; torch {torch.__version__}; median of {args.repeats} runs after warm-up\n",
        "| path | median latency (ms) |",
        "| --- | --- |",
        f"| bare backbone + prototype math (torch) | {1e3 * bare_s:.3f} |",
        f"| `SupportSet.from_tensors` + `adapt` + `predict` | {1e3 * api_s:.3f} |",
        f"| API overhead | {100 * overhead:+.1f}% |",
        "",
        "command: `python benchmarks/speed/api_overhead.py`",
    ]
    text = "\n".join(lines)
    report(text, args.out)


if __name__ == "__main__":
    main()
