"""Caltech-101 test-class accuracy of frozen features: raw pixels and ImageNet EfficientNet-Lite0.

The baselines the shipped photo model has to beat, on the same class split and the same
seeded episodes as ``fewshot evaluate`` (600 episodes, 15 queries per class, mean ± 95% CI):

- raw pixels: nearest class mean of the preprocessed pixels themselves;
- frozen ImageNet Lite0 features with each of ProtoNet's feature normalisations (none, L2,
  centred L2 with the mean feature of the meta-training classes).

``--variants`` also compares preprocessing choices (resolution, TF-Lite vs ImageNet
normalisation, crop vs stretch) with L2 prototypes, to pick the photo preprocessing.

    python benchmarks/accuracy/photo_features.py --data ../shared/data/caltech101 \\
        --out benchmarks/results/photo_features_cpu.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "speed"))  # the shared timing.py
from timing import device_name

import fewshot_sdk as fs
from fewshot_sdk.config import AccuracyResult, PreprocessConfig
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.models.backbones import PHOTO_PREPROCESS
from fewshot_sdk.train.evaluate import evaluate_episodes
from fewshot_sdk.train.recipes import folder_splits

PROTOCOLS = ((5, 1), (5, 5), (20, 1), (20, 5))
IMAGENET_STATS = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def photo_learner(preprocess: PreprocessConfig, **settings: object) -> fs.Learner:
    return fs.create("protonet", backbone="efficientnet-lite0", preprocess=preprocess, **settings)


def embedded(learner: fs.Learner, data: LabelledImages) -> LabelledImages:
    """Backbone outputs before pooling, so every normalisation variant reuses one forward pass."""
    stages = len(learner.backbone.stages) - 1
    return LabelledImages(learner.backbone.stage_outputs(data.images, stages), data.labels, data.class_names)


def score(learner: fs.Learner, cached: LabelledImages, stage: int, protocols, episodes: int) -> list[AccuracyResult]:
    with learner.backbone.starting_at(stage):
        return [evaluate_episodes(learner, cached, n, k, 15, episodes, seed=0) for n, k in protocols]


def row(name: str, results: list[AccuracyResult], seconds: float) -> str:
    cells = " | ".join(f"{100 * r.accuracy:.2f} ± {100 * r.ci95:.2f}" for r in results)
    return f"| {name} | {cells} | {seconds:.0f} s |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/caltech101"))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", action="store_true", help="also compare preprocessing choices (5-way only)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = "| features | " + " | ".join(f"{n}-way {k}-shot" for n, k in PROTOCOLS) + " | time |"
    lines = [
        "# Caltech-101 test classes: frozen features",
        "",
        f"`python benchmarks/accuracy/photo_features.py --data {args.data} --episodes {args.episodes}"
        + (" --variants" if args.variants else "")
        + "`",
        "",
        f"Machine: {device_name()} ({args.threads} threads asked). "
        f"Split seed {args.split_seed} (train / val / test classes, Faces with Faces_easy), "
        f"{args.episodes} episodes, 15 queries per class, mean ± 95% CI.",
        "",
        header,
        "|" + "---|" * (len(PROTOCOLS) + 2),
    ]

    def emit(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    base = photo_learner(PHOTO_PREPROCESS)
    splits = folder_splits(args.data, base, args.split_seed)
    test = splits.test
    print(f"test classes: {test.num_classes}, images: {len(test)}", flush=True)

    # Raw pixels at 32x32 (same shorter-side crop): nearest class means in 150k dimensions at
    # 224x224 take ~1 s an episode here, and downsampling only averages neighbouring pixels.
    start = time.perf_counter()
    thumbnails = PHOTO_PREPROCESS.model_copy(update={"image_size": (32, 32), "resize_shorter": 37})
    pixels = fs.create("protonet", backbone=nn.Flatten(), preprocess=thumbnails)
    small = folder_splits(args.data, pixels, args.split_seed).test
    emit(row("raw pixels (32x32 RGB)", score(pixels, small, 0, PROTOCOLS, args.episodes), time.perf_counter() - start))

    start = time.perf_counter()
    cached_test = embedded(base, test)
    embed_seconds = time.perf_counter() - start
    print(f"embedded {len(test)} test images in {embed_seconds:.1f} s", flush=True)
    stage = len(base.backbone.stages) - 1
    for norm in ("none", "l2"):
        start = time.perf_counter()
        learner = photo_learner(PHOTO_PREPROCESS, feature_norm=norm)
        results = score(learner, cached_test, stage, PROTOCOLS, args.episodes)
        emit(row(f"ImageNet Lite0, {norm}", results, embed_seconds + time.perf_counter() - start))
    start = time.perf_counter()
    centred = photo_learner(PHOTO_PREPROCESS, feature_norm="centered-l2")
    centred.calibrate(splits.train)
    results = score(centred, cached_test, stage, PROTOCOLS, args.episodes)
    emit(row("ImageNet Lite0, centered-l2", results, embed_seconds + time.perf_counter() - start))

    if args.variants:
        five_way = PROTOCOLS[:2]
        emit("")
        emit("Preprocessing variants, L2 prototypes (5-way only):")
        emit("")
        emit("| preprocessing | 5-way 1-shot | 5-way 5-shot | time |")
        emit("|---|---|---|---|")
        variants = {
            "shorter side 256, crop 224, TF-Lite (x-127)/128": PHOTO_PREPROCESS,
            "shorter side 256, crop 224, ImageNet mean/std": PHOTO_PREPROCESS.model_copy(update=IMAGENET_STATS),
            "stretched to 224x224, TF-Lite": PHOTO_PREPROCESS.model_copy(update={"resize_shorter": None}),
            "shorter side 219, crop 192, TF-Lite": PHOTO_PREPROCESS.model_copy(
                update={"image_size": (192, 192), "resize_shorter": 219}
            ),
            "shorter side 183, crop 160, TF-Lite": PHOTO_PREPROCESS.model_copy(
                update={"image_size": (160, 160), "resize_shorter": 183}
            ),
        }
        for name, preprocess in variants.items():
            start = time.perf_counter()
            learner = photo_learner(preprocess, feature_norm="l2")
            data = folder_splits(args.data, learner, args.split_seed).test
            results = score(learner, embedded(learner, data), stage, five_way, args.episodes)
            emit(row(name, results, time.perf_counter() - start))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
