"""Santoro et al.'s per-instance figure for a MANN checkpoint: accuracy by how often a class has been seen.

Santoro et al. (2016, Table 1) feed 5-class episodes of 50 steps (10 instances per
class, shuffled, labels shuffled per episode) and report the accuracy of the
prediction made at the 1st, 2nd, 3rd, 4th, 5th and 10th instance of a class; on
Omniglot: 36.4 / 82.8 / 94.9 / 98.1 % at the 1st / 2nd / 5th / 10th instance. The prediction for x_t is
made before its label y_t is shown (it arrives with x_{t+1}), so the 1st
instance is a guess among the classes not yet seen.

Episodes here are drawn from the test set: the 20 evaluation alphabets for a folder holding the
full Omniglot, else the held-out *test* characters of the checkpoint's own split. Each step's
prediction is the argmax over the episode's 5 label slots.

    python benchmarks/accuracy/mann_instance_accuracy.py --model fewshot_sdk/models/zoo/mann-omniglot \\
        --data ../shared/data/omniglot --episodes 500 --out benchmarks/results/mann_instance_accuracy.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "speed"))  # the shared timing.py
from timing import report

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.omniglot import has_full_set
from fewshot_sdk.methods._label_slots import shuffled_slots
from fewshot_sdk.train.evaluate import mean_ci95
from fewshot_sdk.train.recipes import dataset_splits

INSTANCES = (1, 2, 3, 4, 5, 10)
#: The issue's figures from the paper (one-hot labels, Omniglot); 3rd/4th are left out here.
PAPER = {1: "36.4", 2: "82.8", 3: "-", 4: "-", 5: "94.9", 10: "98.1"}


def instance_accuracy(learner: fs.Learner, sampler: EpisodeSampler, episodes: int, seed: int) -> dict[int, list[float]]:
    """Per instance number, the per-episode accuracy of the predictions at that instance."""
    torch.manual_seed(seed)
    per_instance: dict[int, list[float]] = {k: [] for k in range(1, sampler.k_shot + 1)}
    for _ in range(episodes):
        episode = sampler.sample()
        order = torch.randperm(len(episode.support_y))
        x, y = episode.support_x[order], episode.support_y[order]
        slots = shuffled_slots(episode.n_way, learner.config.max_classes, torch.device("cpu"))
        with torch.inference_mode():
            _, logits = learner.run_sequence(learner.encode(x).unsqueeze(0), slots[y].unsqueeze(0), flush=False)
        predicted = logits[0].index_select(1, slots).argmax(1)
        seen = torch.zeros(episode.n_way, dtype=torch.long)
        hits: dict[int, list[float]] = {k: [] for k in per_instance}
        for t, label in enumerate(y.tolist()):
            seen[label] += 1
            hits[int(seen[label])].append(float(predicted[t] == label))
        for k, values in hits.items():
            per_instance[k].append(sum(values) / len(values))
    return per_instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mann-omniglot")
    parser.add_argument("--data", default="../shared/data/omniglot")
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    learner = fs.load(args.model)
    if learner.method != "mann":
        raise SystemExit(f"{args.model} is a {learner.method} checkpoint, not a MANN")
    splits = dataset_splits(args.data, learner)  # the checkpoint's own class split
    test, split_seed = splits.test, splits.split_seed
    test_set = (
        "the 20 evaluation alphabets (the papers' test set)"
        if has_full_set(args.data)
        else f"the held-out test characters (split seed {split_seed})"
    )
    sampler = EpisodeSampler(test, args.classes, args.instances, 0, seed=args.seed)
    start = time.perf_counter()
    per_instance = instance_accuracy(learner, sampler, args.episodes, args.seed)
    seconds = time.perf_counter() - start

    lines = [
        f"# MANN accuracy by instance ({args.classes}-class episodes of {args.classes * args.instances} steps)",
        "",
        f"Model `{args.model}`, {args.episodes} episodes from {test_set}, "
        f"seed {args.seed}; {seconds:.0f} s on CPU. Mean over episodes ± 95% CI.",
        "",
        "| instance | "
        + " | ".join(
            f"{k}{'st' if k == 1 else 'nd' if k == 2 else 'rd' if k == 3 else 'th'}"
            for k in INSTANCES
            if k <= args.instances
        )
        + " |",
        "| --- | " + " | ".join("---" for k in INSTANCES if k <= args.instances) + " |",
    ]
    ours = []
    for k in INSTANCES:
        if k <= args.instances:
            mean, ci = mean_ci95(per_instance[k])
            ours.append(f"{100 * mean:.1f} ± {100 * ci:.1f}")
    lines.append("| ours (%) | " + " | ".join(ours) + " |")
    lines.append(
        "| Santoro et al. 2016 (%) | " + " | ".join(f"{PAPER[k]}" for k in INSTANCES if k <= args.instances) + " |"
    )
    lines += [
        "",
        "Command: `python benchmarks/accuracy/mann_instance_accuracy.py "
        + " ".join(f"--{name.replace('_', '-')} {value}" for name, value in vars(args).items() if value is not None)
        + "`",
        "",
    ]
    text = "\n".join(lines)
    report(text, args.out)


if __name__ == "__main__":
    main()
