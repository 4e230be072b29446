"""Cross-domain accuracy of photo models and adaptation modes, through ``fewshot evaluate``'s own protocol.

Each model is evaluated by ``train.protocols.run_protocol`` (what ``fewshot evaluate --domain ... --data ...`` runs):
every ``--domain`` folder on all its classes (5-way, fewer where it has fewer; 1- and 5-shot; 15 queries a class;
seeded episodes; mean ± 95% CI), Caltech-101's held-out test classes with ``--data``, and the mean over the domains.
Models:

- ``frozen-imagenet``: EfficientNet-Lite0 with Google's ImageNet weights as bundled, no meta-training, at 224 px
  with its own (x - 127) / 128 scaling, L2-normalised nearest centroid (SimpleShot): the baseline to beat;
- ``protonet-photos``: the shipped model; the candidates it was chosen from are in ``photo_models.py``.

Each runs inductively and with ``--transductive`` (the batch refines the prototypes: support-centred soft
k-means). Seconds per task are ``adapt`` + ``predict`` of a 5-way task through the public API (5 x 1 and
5 x 5 support photos, 75 queries), median of ``--repeats`` runs after a warm-up, at the threads torch is given.

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
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.folders import scan_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.train.evaluate import mean_ci95
from fewshot_sdk.train.protocols import EvaluationConfig, choose_protocol, run_protocol
from fewshot_sdk.train.recipes import dataset_splits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # photo_models.py beside this file
from photo_models import MODELS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DOMAINS = ("eurosat_rgb", "chest_xray_pneumonia", "plantvillage_apple", "dtd_textures")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "photos"


def example_task(shots: int) -> tuple[fs.SupportSet, list[Path]]:
    """The timed task: the example photos' 5 classes with ``shots`` support photos each, and 75 queries."""
    classes = sorted(p for p in (EXAMPLES / "support").iterdir() if p.is_dir())
    support = fs.SupportSet.from_mapping({c.name: sorted(c.iterdir())[:shots] for c in classes})
    return support, sorted((EXAMPLES / "queries").iterdir()) * 15


def seconds_per_task(learner: fs.Learner, shots: int, transductive: bool, repeats: int, **options: object) -> float:
    """adapt + predict of a 5-way task (``shots`` support photos a class, 75 queries), median over ``repeats``."""
    support, queries = example_task(shots)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        learner.adapt(support, **options).predict(queries, transductive=transductive)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def evaluate(learner: fs.Learner, args: argparse.Namespace, transductive: bool) -> list[AccuracyResult]:
    config = EvaluationConfig(
        k_shot=[1, 5], episodes=args.episodes, domains=[args.data / d for d in args.domains], transductive=transductive
    )
    protocol = choose_protocol(args.data / "caltech101", config)
    evaluation = run_protocol(learner, protocol, config)
    return evaluation.episodes + evaluation.domain_means


def finetuned(learner: fs.Learner, args: argparse.Namespace) -> list[str]:
    """Rows of ``finetune="auto"``, inductive and transductive, scored on one adaptation per episode.

    The episodes are those of ``fewshot evaluate --finetune auto`` (the same seeded sampler, the first
    ``--finetune-episodes`` of them), the datasets those of the other modes.
    """
    datasets = {}
    if not args.finetune_far_only:
        datasets["caltech101-test"] = dataset_splits(args.data / "caltech101", learner).test
    for domain in args.domains:
        datasets[domain] = LabelledImages.from_mapping(scan_class_folders(args.data / domain), learner.preprocessor)
    twin = learner.frozen_or_self()
    rows, means = [], {}
    for name, dataset in datasets.items():
        for k_shot in args.finetune_shots:
            n_way = min(5, dataset.num_classes)
            sampler = EpisodeSampler(dataset, n_way, k_shot, 15, seed=0)
            scored: dict[str, list[float]] = {"finetune": [], "finetune +transductive": []}
            for _ in range(args.finetune_episodes):
                episode = sampler.sample()
                state = twin.adapt_tensors(episode.support_x, episode.support_y, n_way, finetune="auto")
                with torch.inference_mode():
                    logits = twin.score(state, episode.query_x)
                    refined = twin.transductive_module(state)(episode.query_x)[0]
                for mode, out in (("finetune", logits), ("finetune +transductive", refined)):
                    scored[mode].append(float((out.argmax(1) == episode.query_y).double().mean()))
            for mode, values in scored.items():
                mean, ci = mean_ci95(values)
                if name != "caltech101-test":
                    means.setdefault((mode, k_shot), []).append((mean, ci))
                rows.append(f"| {args.label} {mode} | {name} | {n_way}w{k_shot}s | {100 * mean:.2f} ± {100 * ci:.2f} |")
                print(rows[-1], flush=True)
    for (mode, k_shot), figures in means.items():
        mean = sum(m for m, _ in figures) / len(figures)
        ci = sum(c**2 for _, c in figures) ** 0.5 / len(figures)
        where = "mean of " + ", ".join(args.domains)
        rows.append(f"| {args.label} {mode} | {where} | 5w{k_shot}s | {100 * mean:.2f} ± {100 * ci:.2f} |")
        print(rows[-1], flush=True)
    for transductive in (False, True):
        speed = {k: seconds_per_task(learner, k, transductive, args.repeats, finetune="auto") for k in (1, 5)}
        mode = "finetune +transductive" if transductive else "finetune"
        rows.append(f"| {args.label} {mode} | seconds per task (5x1, 5x5) | | {speed[1]:.2f}, {speed[5]:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="*", default=["inductive", "transductive"])
    parser.add_argument("--finetune-episodes", type=int, default=0, help="also fine-tuned tasks, on this many")
    parser.add_argument("--finetune-far-only", action="store_true", help="fine-tuned tasks on the far domains only")
    parser.add_argument("--finetune-shots", nargs="+", type=int, default=[1, 5], help="fine-tuned tasks at these shots")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.models:
        learner = MODELS[name]()
        if args.finetune_episodes:
            args.label = name
            rows += finetuned(learner, args)
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
