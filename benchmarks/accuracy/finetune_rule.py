"""Choosing ``finetune="auto"``'s rule: fine-tuning settings against no fine-tuning, on the same episodes.

On development domains only (by default EuroSAT and PlantVillage; the other far domains are kept for the
report), every setting is evaluated on one shared set of seeded episodes per domain and shot, through
``train.evaluate.evaluate_episodes`` (the path ``fewshot evaluate --finetune`` runs), so differences between
settings are paired. Seconds per task are the wall time of an episode (adapt with fine-tuning, then its
75 or so queries) at the threads torch is given.

    python benchmarks/accuracy/finetune_rule.py --model protonet-photos --episodes 40
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from fewshot_sdk.data.folders import scan_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.train.evaluate import evaluate_episodes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # photo_models.py beside this file
from photo_models import MODELS

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: name -> adapt's finetune (None: the untuned task, every setting's reference)
SETTINGS: dict[str, object] = {
    "none": None,
    "tail1 x20": {"stages": 1, "steps": 20},
    "tail2 x20": {"stages": 2, "steps": 20},
    "tail2 x10": {"stages": 2, "steps": 10},
    "tail3 x20": {"stages": 3, "steps": 20},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="protonet-photos", choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--domains", nargs="+", default=["eurosat_rgb", "plantvillage_apple"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 1])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument(
        "--extra", type=json.loads, action="append", default=[], help="a JSON dict of finetune settings to add (repeat)"
    )
    args = parser.parse_args()
    settings = {name: SETTINGS[name] for name in args.settings}
    for extra in args.extra:
        settings[json.dumps(extra)] = extra
    learner = MODELS[args.model]()
    print(f"{args.model}, {torch.get_num_threads()} threads, {args.episodes} episodes a domain and shot")
    print("| domain | shots | setting | accuracy (%) | seconds per task |")
    print("| --- | --- | --- | --- | --- |")
    for domain in args.domains:
        dataset = LabelledImages.from_mapping(scan_class_folders(args.data / domain), learner.preprocessor)
        n_way = min(5, dataset.num_classes)
        for shots in args.shots:
            for name, finetune in settings.items():
                options = {"finetune": finetune} if finetune is not None else None
                start = time.perf_counter()
                result = evaluate_episodes(learner, dataset, n_way, shots, episodes=args.episodes, options=options)
                seconds = (time.perf_counter() - start) / args.episodes
                figure = f"{100 * result.accuracy:.2f} ± {100 * result.ci95:.2f}"
                print(f"| {domain} | {n_way}x{shots} | {name} | {figure} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
