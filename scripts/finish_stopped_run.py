"""Close the record of a training run that was stopped before its planned end.

``fewshot train`` keeps the best weights on disk as validation improves, with a record
that says ``"status": "in progress"``. A run stopped by hand (validation plateaued, or
the session ended) leaves that record. This script replaces it with what happened: why
it stopped, the episodes planned, the validation curve read from the run's log (the
``training N/M ... val_accuracy=X`` lines), the kept episode and the wall time.

    python scripts/finish_stopped_run.py runs/maml-full --log runs/maml-full.log --seconds 2760 \
        --reason "stopped by hand after the validation at episode 2000: validation had plateaued"
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PROGRESS = re.compile(r"training (\d+)/(\d+)\b.*?\bval_(?:accuracy|mse)=([0-9.]+)")


def validation_curve(log: str) -> tuple[dict[str, float], int]:
    """The validation figure by episode, and the planned episode count, from a ``fewshot train`` log."""
    curve, planned = {}, 0
    for episode, total, value in PROGRESS.findall(log):
        curve[episode] = round(float(value), 4)
        planned = int(total)
    return curve, planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--reason", required=True)
    parser.add_argument("--seconds", type=float, required=True, help="wall time of the run until it was stopped")
    parser.add_argument("--higher-is-better", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    config_path = args.checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    training = config["provenance"]["training"]
    if training["extra"].get("status") != "in progress":
        sys.exit(f"{config_path}: its run is not marked in progress; nothing to close")
    curve, planned = validation_curve(args.log.read_text())
    if not curve:
        sys.exit(f"{args.log}: no validation lines found")
    pick = max if args.higher_is_better else min
    kept = pick((value, -int(episode)) for episode, value in curve.items() if int(episode) > 0)
    extra = {key: value for key, value in training["extra"].items() if key != "status"}
    extra.update(
        planned_episodes=planned,
        stopped=args.reason,
        best_episode=-kept[1],
        val_curve=curve,
        seconds=round(args.seconds),
    )
    training["extra"] = extra
    training["episodes"] = max(int(episode) for episode in curve)
    training["best_val_accuracy"] = kept[0]
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"{config_path}: kept episode {extra['best_episode']} ({kept[0]}), {len(curve)} validations")


if __name__ == "__main__":
    main()
