"""Does fine-tuning separate "none of these" better on new domains? Novelty AUROC of tuned and untuned scores.

The episodes follow ``open_set_rules.py`` (its seed, its classes, its photos): ``n_way`` support classes (5, or
half the domain's classes where it has fewer than ten) with ``--shots`` photos and 15 queries each, and 5 photos
from each of up to 5 other classes. Each episode's support is fine-tuned once (``finetune`` as ``adapt`` gets
it); every score below is computed on the same queries, and the per-episode AUROC (outside against in-support
queries) is averaged. Scores (larger: more novel):

- ``prototype``: squared distance to the nearest untuned prototype over the temperature (today's novelty, which
  a fine-tuned task keeps);
- ``tuned-head``: minus the best cosine to a row of the tuned head;
- ``tuned-means``: minus the best cosine to a class mean of the tuned support features;
- ``tuned-max-softmax``: minus the tuned head's largest probability;
- ``tuned-energy``: minus the logsumexp of the tuned head's logits;
- ``prototype+tuned-head``: the two scores standardised over the episode's own support classes' held-in photos
  (each score's mean and spread on the support itself) and summed.

    OMP_NUM_THREADS=2 python benchmarks/accuracy/finetune_open_set.py --episodes 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from fewshot_sdk.data.folders import scan_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.methods.base import class_means
from fewshot_sdk.methods.finetuning import FineTunedScorer, cosine_logits
from fewshot_sdk.train.evaluate import auroc

sys.path.insert(0, str(Path(__file__).resolve().parent))  # photo_models.py, open_set_rules.py beside this file
from open_set_rules import draw_episode, open_set_ways
from photo_models import MODELS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
KINDS = ("prototype", "tuned-head", "tuned-means", "tuned-max-softmax", "tuned-energy", "prototype+tuned-head")


def novelty(scorer: FineTunedScorer, learner, prototypes, means, images: torch.Tensor) -> dict[str, torch.Tensor]:
    tuned, untuned = scorer.features(images)
    head = cosine_logits(tuned, scorer.head, scorer.scale)
    return {
        "prototype": -learner.prototype_logits(untuned, prototypes).max(1).values,
        "tuned-head": -head.max(1).values / scorer.scale,
        "tuned-means": -(F.normalize(tuned, dim=1) @ F.normalize(means, dim=1).t()).max(1).values,
        "tuned-max-softmax": -head.softmax(1).max(1).values,
        "tuned-energy": -torch.logsumexp(head, 1),
    }


def standardised_sum(scores: dict[str, torch.Tensor], on_support: dict[str, torch.Tensor]) -> torch.Tensor:
    """The untuned and tuned-head scores, each standardised by its mean and spread on the support photos, summed."""
    return sum(
        (scores[k] - on_support[k].mean()) / on_support[k].std().clamp_min(1e-6) for k in ("prototype", "tuned-head")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="protonet-photos", choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--domains", nargs="+", default=["eurosat_rgb", "plantvillage_apple", "chest_xray_pneumonia", "dtd_textures"]
    )
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=30)
    args = parser.parse_args()
    learner = MODELS[args.model]().frozen_or_self().eval()
    print(f"{args.model}, finetune='auto', {args.shots}-shot, {args.episodes} episodes a domain")
    print("| domain | ways + outside | score | AUROC |")
    print("| --- | --- | --- | --- |")
    for domain in args.domains:
        data = LabelledImages.from_mapping(scan_class_folders(args.data / domain), learner.preprocessor)
        by_class = data.indices_by_class()
        n_way, outside = open_set_ways(data.num_classes)
        generator = torch.Generator().manual_seed(0)
        aurocs: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(args.episodes):
            support, y, inside, outsiders = draw_episode(by_class, n_way, outside, args.shots, generator)
            x = data.images[support]
            state = learner.adapt_tensors(x, y, n_way, finetune="auto")
            scorer = learner.finetuned_scorer(state)
            with torch.inference_mode():
                tuned_support, _ = scorer.features(x)
                means = class_means(tuned_support, y, n_way)
                known = novelty(scorer, learner, state["prototypes"], means, data.images[inside])
                unknown = novelty(scorer, learner, state["prototypes"], means, data.images[outsiders])
                on_support = novelty(scorer, learner, state["prototypes"], means, x)
            for kind in KINDS[:-1]:
                aurocs[kind].append(auroc(known[kind], unknown[kind]))
            combined = [standardised_sum(scores, on_support) for scores in (known, unknown)]
            aurocs["prototype+tuned-head"].append(auroc(*combined))
        for kind in KINDS:
            print(f"| {domain} | {n_way} + {outside} | {kind} | {statistics.fmean(aurocs[kind]):.3f} |", flush=True)


if __name__ == "__main__":
    main()
