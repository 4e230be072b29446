"""Seconds per task with and without side levels: the bundled photo model against its head-only features.

``adapt`` on the example photos (5 x 1 and 5 x 5) plus ``predict`` of 75 queries, through the public API, as
``benchmarks/accuracy/cross_domain.py`` times it; with ``--finetune``, ``finetune="auto"``. The two models share
their weights, so the difference is what the carried channels and the larger embedding cost. Paths are
interleaved in shuffled rounds after a warm-up (``timing.interleaved_seconds``); the medians are printed.

    OMP_NUM_THREADS=1 python benchmarks/speed/side_levels_speed.py --rounds 5
    OMP_NUM_THREADS=2 python benchmarks/speed/side_levels_speed.py --rounds 3 --finetune
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared timing.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "accuracy"))  # the photo models, the example task
from cross_domain import example_task
from photo_models import MODELS
from timing import device_name, interleaved_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--finetune", action="store_true", help='adapt with finetune="auto"')
    args = parser.parse_args()
    options = {"finetune": "auto"} if args.finetune else {}
    paths = {}
    for name in ("head-only", "protonet-photos"):
        learner = MODELS[name]()
        for shots in (1, 5):
            support, queries = example_task(shots)
            paths[f"{name}, 5 x {shots}"] = lambda s=support, q=queries, m=learner: m.adapt(s, **options).predict(q)
    samples = interleaved_seconds(paths, rounds=args.rounds, warmup=1)
    setting = f"{torch.get_num_threads()} thread(s), {'finetune=auto, ' if options else ''}median of {args.rounds}"
    print(f"{device_name()}, {setting}:")
    for path, seconds in samples.items():
        print(f"  {path}: {statistics.median(seconds):.3f} s")


if __name__ == "__main__":
    main()
