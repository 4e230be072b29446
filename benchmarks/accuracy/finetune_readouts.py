"""How a fine-tuned task should read its tuned network out: several readouts of one fine-tuning, paired.

A fine-tuned task holds two networks that share a prefix: the tuned tail with its cosine head, and the
untuned tail with the prototypes (which it already runs for novelty). This script fine-tunes each episode
once (``finetune`` as ``adapt`` gets it) and scores the same queries by every readout below, so the
differences between readouts are paired and free of the fine-tuning's randomness:

- ``head``: the tuned cosine head (what a fine-tuned task predicts today);
- ``untuned``: the untuned prototypes (the default task of the same support);
- ``tuned-means``: nearest class mean of the tuned features of the support photos themselves;
- ``head+untuned xW``: log-probabilities of ``head`` plus W times those of ``untuned`` (an ensemble of the two
  networks the task runs anyway);
- ``head+tuned-means``: the two readouts of the tuned network, summed the same way;
- ``transductive head`` / ``transductive tuned-means``: the batch refines the head's rows (what
  ``transductive=True`` does on a fine-tuned task today) or the tuned class means;
- ``transductive head+untuned``: the refined head's log-probabilities plus the untuned prototypes' (the sum
  a fine-tuned task predicts with, its head refined by the batch);
- ``transductive head+transductive untuned``: the same with the untuned prototypes refined by the batch too
  (what ``transductive=True`` does on a task that was not fine-tuned).

Episodes are ``train.evaluate``'s (same sampler and seed), so the ``head`` and ``untuned`` rows reproduce
``fewshot evaluate --finetune auto`` and ``fewshot evaluate``.

    OMP_NUM_THREADS=2 python benchmarks/accuracy/finetune_readouts.py --episodes 30 --shots 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.folders import scan_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.methods.base import class_means
from fewshot_sdk.methods.finetuning import FineTunedScorer, cosine_logits, with_untuned
from fewshot_sdk.methods.transductive_prototypes import refine
from fewshot_sdk.train.evaluate import mean_ci95

sys.path.insert(0, str(Path(__file__).resolve().parent))  # photo_models.py beside this file
from photo_models import MODELS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ENSEMBLE_WEIGHTS = (0.25, 0.5, 1.0, 2.0)


def readouts(scorer: FineTunedScorer, learner, state, support_x, support_y, n_way, queries) -> dict[str, torch.Tensor]:
    """readout name -> logits [queries, n_way] for one fine-tuned task."""
    tuned, untuned = scorer.features(queries)
    tuned_support, _ = scorer.features(support_x)
    means = class_means(tuned_support, support_y, n_way)
    head = cosine_logits(tuned, scorer.head, scorer.scale)
    untuned_logits = learner.prototype_logits(untuned, state["prototypes"])
    tuned_means = cosine_logits(tuned, means, scorer.scale)
    out = {"head": head, "untuned": untuned_logits, "tuned-means": tuned_means}
    for weight in ENSEMBLE_WEIGHTS:
        out[f"head+untuned x{weight:g}"] = with_untuned(head, untuned_logits, weight)
    out["head+tuned-means"] = with_untuned(head, tuned_means, 1.0)
    normalised = F.normalize(tuned, dim=1)
    rows, centred = refine(scorer.head, scorer.shots, normalised)
    out["transductive head"] = cosine_logits(centred, rows, scorer.scale)
    out["transductive head+untuned"] = with_untuned(out["transductive head"], untuned_logits, 1.0)
    refined, untuned_centred = refine(state["prototypes"], scorer.shots, untuned)
    untuned_refined = learner.prototype_logits(untuned_centred, refined)
    out["transductive head+transductive untuned"] = with_untuned(out["transductive head"], untuned_refined, 1.0)
    rows, centred = refine(F.normalize(means, dim=1), scorer.shots, normalised)
    out["transductive tuned-means"] = cosine_logits(centred, rows, scorer.scale)
    return out


def settings_or_auto(text: str) -> object:
    return text if text == "auto" else json.loads(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="protonet-photos", choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--domains", nargs="+", default=["eurosat_rgb", "plantvillage_apple", "chest_xray_pneumonia", "dtd_textures"]
    )
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 1])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--finetune", type=settings_or_auto, default="auto", help='"auto" or JSON fine-tuning settings')
    args = parser.parse_args()
    learner = MODELS[args.model]().frozen_or_self().eval()
    print(f"{args.model}, finetune={args.finetune!r}, {torch.get_num_threads()} threads, {args.episodes} episodes")
    print("| domain | shots | readout | accuracy (%) | vs head |")
    print("| --- | --- | --- | --- | --- |")
    for domain in args.domains:
        dataset = LabelledImages.from_mapping(scan_class_folders(args.data / domain), learner.preprocessor)
        n_way = min(5, dataset.num_classes)
        for shots in args.shots:
            sampler = EpisodeSampler(dataset, n_way, shots, 15, seed=0)
            accuracy: dict[str, list[float]] = defaultdict(list)
            start = time.perf_counter()
            for _ in range(args.episodes):
                episode = sampler.sample()
                state = learner.adapt_tensors(episode.support_x, episode.support_y, n_way, finetune=args.finetune)
                scorer = learner.finetuned_scorer(state)
                with torch.inference_mode():
                    support = (episode.support_x, episode.support_y, n_way)
                    logits = readouts(scorer, learner, state, *support, episode.query_x)
                for name, value in logits.items():
                    accuracy[name].append(float((value.argmax(1) == episode.query_y).float().mean()))
            seconds = (time.perf_counter() - start) / args.episodes
            head = sum(accuracy["head"]) / args.episodes
            for name, values in accuracy.items():
                mean, ci = mean_ci95(values)
                figure = f"{100 * mean:.2f} ± {100 * ci:.2f} | {100 * (mean - head):+.2f}"
                print(f"| {domain} | {n_way}x{shots} | {name} | {figure} |")
            print(f"| {domain} | {n_way}x{shots} | (seconds per episode) | {seconds:.2f} | |", flush=True)


if __name__ == "__main__":
    main()
