"""Mean and median K-shot MSE of `maml-sinusoid` after 10 adaptation steps over many random tasks.

The issue it answers: with clustered support x's, plain gradient steps can diverge (support
loss 0.12 -> 4.3 -> 4e10), and one divergent task makes the mean MSE infinite. Tasks are
the paper's (amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]), 5 support and 10 query
points each, seeded, through the public ``adapt``/``predict`` path.

    python benchmarks/accuracy/sinusoid_divergence.py --tasks 300 --steps 10
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

import fewshot_sdk as fs
from fewshot_sdk.data.sinusoid import SinusoidTasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="maml-sinusoid")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--k-shot", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    learner = fs.load(args.model)
    sampler = SinusoidTasks(args.k_shot, 10, seed=args.seed)
    errors, failed = [], 0
    for _ in range(args.tasks):
        episode = sampler.sample()
        try:
            task = learner.adapt(
                fs.SupportSet.from_tensors(episode.support_x, episode.support_y, task="regression"), steps=args.steps
            )
        except fs.FewShotError:
            failed += 1
            continue
        predicted = task.predict(episode.query_x).values.reshape(-1)
        errors.append(float(((predicted - episode.query_y.reshape(-1)) ** 2).mean()))
    finite = [e for e in errors if math.isfinite(e)]
    mean = statistics.fmean(errors) if len(finite) == len(errors) else float("inf")
    print(
        f"{args.model}, {args.k_shot}-shot, {args.steps} steps, {args.tasks} tasks (seed {args.seed}): "
        f"mean MSE {mean:.4f}, median {statistics.median(errors):.4f}, max {max(errors):.3g}, "
        f"non-finite {len(errors) - len(finite)}, refused {failed}"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
