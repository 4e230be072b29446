"""Copy a trained checkpoint into the bundled zoo, optionally storing its weights as float16.

    python scripts/bundle_model.py runs/protonet-photos-b protonet-photos --float16

The zoo folder is what ``fs.load(NAME)`` finds; evaluate it afterwards with
``fewshot evaluate --model NAME ... --record`` so the recorded figures are those of the
stored (possibly float16) weights.
"""

from __future__ import annotations

import argparse

import fewshot_sdk as fs
from fewshot_sdk.registry import ZOO_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("name")
    parser.add_argument("--float16", action="store_true", help="store floating-point weights as float16")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    learner = fs.load(args.checkpoint)
    if args.float16:
        learner.storage_dtype = "float16"
    path = learner.save(ZOO_DIR / args.name, overwrite=args.overwrite)
    print(f"bundled {args.checkpoint} as {args.name}: {path} ({learner.storage_dtype})")


if __name__ == "__main__":
    main()
