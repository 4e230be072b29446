"""Give an EfficientNet-Lite0 checkpoint side levels: the same weights, the last blocks' outputs kept beside the head's.

    python scripts/with_side_levels.py protonet-photos --weights 1 0.5 --out runs/protonet-photos-levels

``BackboneConfig.side_levels`` adds no parameters: the new checkpoint holds the same tensors, and its
config says which block outputs join the embedding and with what weight (the last block's first). The
provenance keeps the checkpoint's training record, says what changed in ``training.extra["side_levels"]``,
and drops the recorded figures, which were measured without the levels: evaluate the new checkpoint.
"""

from __future__ import annotations

import argparse

from derived_checkpoint import carry_over  # beside this script

import fewshot_sdk as fs

#: Where the bundled photo model's side levels were chosen (recorded in the new checkpoint's provenance).
CHOSEN_IN = "benchmarks/results/cross_domain_cpu.md"


def side_levelled(source: fs.Learner, weights: tuple[float, ...]) -> fs.Learner:
    """A new learner of ``source``'s method, weights and preprocessing, its backbone with these side levels."""
    # validated (model_copy would not check the weights): a bad one is refused before any weights are copied
    backbone = type(source.backbone_config)(**{**source.backbone_config.model_dump(), "side_levels": weights})
    learner = type(source)(source.config, backbone, source.preprocess_config)
    learner.load_state_dict(source.state_dict())
    return learner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="bundled model or checkpoint folder (efficientnet-lite0)")
    parser.add_argument("--weights", type=float, nargs="+", required=True, help="each level's weight, last block first")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    source = fs.load(args.checkpoint)
    learner = side_levelled(source, tuple(args.weights))
    how = {"weights": list(args.weights), "from": str(args.checkpoint), "chosen_in": CHOSEN_IN}
    carry_over(source, learner, "side_levels", how)
    path = learner.save(args.out)
    print(f"wrote {path}: {args.checkpoint} with side levels {args.weights}")


if __name__ == "__main__":
    main()
