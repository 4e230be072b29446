"""Cross-domain accuracy of photo models and adaptation modes, through ``fewshot evaluate``'s own protocol.

Each model is evaluated by ``train.protocols.run_protocol`` (what ``fewshot evaluate --domain ... --data ...`` runs):
every ``--domain`` folder on all its classes (5-way, fewer where it has fewer; 1- and 5-shot; 15 queries a class;
seeded episodes; mean ± 95% CI), Caltech-101's held-out test classes with ``--data``, and the mean over the domains.
Models:

- ``frozen-imagenet``: EfficientNet-Lite0 with Google's ImageNet weights as bundled, no meta-training, at 224 px
  with its own (x - 127) / 128 scaling, L2-normalised nearest centroid (SimpleShot): the baseline to beat;
- ``protonet-photos``: the shipped model (meta-fine-tuned on Caltech-101 training classes, 192 px);
- ``protonet-photos@224``: the shipped weights at the ImageNet input size.

Each runs inductively and with ``--transductive`` (prototype rectification over each episode's queries). Seconds
per task are ``adapt`` + ``predict`` of a 5-way task through the public API (5 x 1 and 5 x 5 support photos,
75 queries), median of ``--repeats`` runs after a warm-up, at the threads torch is given.

    python benchmarks/accuracy/cross_domain.py --episodes 600 --out benchmarks/results/cross_domain_cpu.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import fewshot_sdk as fs
from fewshot_sdk.config import AccuracyResult
from fewshot_sdk.train.protocols import EvaluationConfig, choose_protocol, run_protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))  # photo_models.py beside this file
from photo_models import MODELS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DOMAINS = ("eurosat_rgb", "chest_xray_pneumonia", "plantvillage_apple", "dtd_textures")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "photos"


def seconds_per_task(learner: fs.Learner, shots: int, transductive: bool, repeats: int) -> float:
    """adapt + predict of a 5-way task (``shots`` support photos a class, 75 queries), median over ``repeats``."""
    classes = sorted(p for p in (EXAMPLES / "support").iterdir() if p.is_dir())
    support = fs.SupportSet.from_mapping({c.name: sorted(c.iterdir())[:shots] for c in classes})
    queries = sorted((EXAMPLES / "queries").iterdir()) * 15
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        learner.adapt(support).predict(queries, transductive=transductive)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def evaluate(learner: fs.Learner, args: argparse.Namespace, transductive: bool) -> list[AccuracyResult]:
    config = EvaluationConfig(
        k_shot=[1, 5], episodes=args.episodes, domains=[args.data / d for d in args.domains], transductive=transductive
    )
    protocol = choose_protocol(args.data / "caltech101", config)
    evaluation = run_protocol(learner, protocol, config)
    return evaluation.episodes + evaluation.domain_means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["inductive", "transductive"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        learner = MODELS[name]()
        for transductive in (mode == "transductive" for mode in args.modes):
            started = time.time()
            results = evaluate(learner, args, transductive)
            speed = {k: seconds_per_task(learner, k, transductive, args.repeats) for k in (1, 5)}
            label = name + (" +transductive" if transductive else "")
            for r in results:
                where = "caltech101-test" if r.split == "test" else r.dataset
                line = f"| {label} | {where} | {r.n_way}w{r.k_shot}s | {100 * r.accuracy:.2f} ± {100 * r.ci95:.2f} |"
                rows.append(line)
                print(line, flush=True)
            timing = f"| {label} | seconds per task (5x1, 5x5) | | {speed[1]:.2f}, {speed[5]:.2f} |"
            rows.append(timing)
            print(timing, f"({time.time() - started:.0f} s)", flush=True)
    if args.out:
        header = [
            "# Cross-domain accuracy (issue 26)",
            "",
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}. {args.episodes} episodes per setting, 15 queries a class, seed 0.",
            "",
            "| model | data | setting | accuracy (%) |",
            "| --- | --- | --- | --- |",
        ]
        args.out.write_text("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    main()
