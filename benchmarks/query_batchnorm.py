"""A gradient model's test accuracy with queries normalised by the support's statistics vs transductively.

The SDK's default (``bn="support"``) normalises queries with the support set's batch-norm
statistics under the adapted weights, so a prediction does not depend on which other queries
share its batch. Papers (MAML, Reptile's "+ Transduction") often report the transductive
figure, where the query batch normalises itself. Both modes score the same seeded episodes of
the evaluation alphabets, so the difference is the batch norm alone.

    python benchmarks/query_batchnorm.py --model reptile-omniglot --n-way 5 --k-shot 1 --episodes 600
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import fewshot_sdk as fs
from fewshot_sdk.data.omniglot import load_evaluation_characters
from fewshot_sdk.train.evaluate import evaluate_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/omniglot")
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    learner = fs.load(args.model)
    characters = load_evaluation_characters(args.data, learner.preprocessor)
    for mode in ("support", "transductive"):
        learner.config.bn = mode
        result = evaluate_episodes(learner, characters, args.n_way, args.k_shot, 15, episodes=args.episodes, seed=0)
        print(
            f"{args.model} {args.n_way}-way {args.k_shot}-shot, bn={mode}: "
            f"{100 * result.accuracy:.2f} ± {100 * result.ci95:.2f} ({args.episodes} episodes, seed 0)"
        )


if __name__ == "__main__":
    main()
