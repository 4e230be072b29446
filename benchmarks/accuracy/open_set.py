"""Open-set recognition on held-out classes: the novelty score and the "auto" threshold vs max softmax.

Episodes: 5-way 5-shot support, 15 queries per support class, plus 25 queries from 5
classes outside the support (5 each), 600 seeded episodes of the dataset's test classes
(Caltech-101 test classes; Omniglot's evaluation alphabets). Reported with 95% CIs:

- AUROC of the task's novelty score (in-support vs outside queries), and of the
  maximum-softmax-probability baseline (Hendrycks & Gimpel 2017) on the same episodes;
- at the ``reject="auto"`` threshold, calibrated on each episode's support alone:
  in-support queries wrongly rejected, outside queries wrongly accepted, and open-set
  accuracy (in-support right and accepted, outside rejected, over all 100 queries).

    python benchmarks/accuracy/open_set.py --model protonet-photos --data ../shared/data/caltech101 \\
        --out benchmarks/results/open_set_protonet-photos.md
    python benchmarks/accuracy/open_set.py --model protonet-omniglot --data ../shared/data/omniglot \\
        --out benchmarks/results/open_set_protonet-omniglot.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "speed"))  # the shared timing.py
from timing import device_name, report

import fewshot_sdk as fs
from fewshot_sdk.train.evaluate import evaluate_open_set
from fewshot_sdk.train.recipes import dataset_splits

LABELS = {
    "novelty_auroc": "AUROC, novelty score",
    "max_softmax_auroc": "AUROC, max softmax (baseline)",
    "closed_accuracy": "closed-set accuracy, in-support queries",
    "known_rejected": "in-support queries rejected at auto",
    "unknown_accepted": "outside queries accepted at auto",
    "open_accuracy": "open-set accuracy at auto (all queries)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    learner = fs.load(args.model)
    held_out = getattr(dataset_splits(args.data, learner), args.split)
    start = time.perf_counter()
    with torch.inference_mode(False):
        figures = evaluate_open_set(learner, held_out, args.n_way, args.k_shot, episodes=args.episodes)
    seconds = time.perf_counter() - start
    command = " ".join(["python benchmarks/accuracy/open_set.py", *sys.argv[1:]])
    lines = [
        f"# Open-set episodes: `{args.model}` on {args.data.name} {args.split} classes",
        "",
        f"{args.n_way}-way {args.k_shot}-shot support, 15 queries per support class + 25 queries from 5 classes "
        f"outside it, {args.episodes} seeded episodes over {held_out.num_classes} held-out classes; mean ± 95% CI.",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {LABELS[name]} | {100 * mean:.2f} ± {100 * ci:.2f} % |" for name, (mean, ci) in figures.items()]
    lines += ["", f"Machine: {device_name()}; {seconds:.0f} s.", "", "```", command, "```"]
    text = "\n".join(lines) + "\n"
    report(text, args.out)


if __name__ == "__main__":
    main()
