"""Average a meta-fine-tuned checkpoint with the weights it started from (WiSE-FT), into a new checkpoint.

Wortsman et al. (CVPR 2022, "Robust fine-tuning of zero-shot models") found that the weight-space
average of a fine-tuned network and its pre-trained start keeps most of the gain on the fine-tuning
distribution and loses little of the start's robustness elsewhere. For the photo model, the meta-fine-tuning
on Caltech-101 helps on Caltech and costs on far domains; the average trades one for the other.

    python scripts/interpolate_weights.py protonet-photos --weight 0.5 --image-size 224 --resize-shorter 256 \\
        --feature-norm sqrt-l2 --out runs/protonet-photos-wise

The start is the backbone's own pretrained weights (``BackboneConfig.pretrained``); tensors the start has
not (method buffers) are kept from the checkpoint. The new checkpoint's provenance keeps the
checkpoint's training record and says how it was made, in ``training.extra["interpolation"]``.
"""

from __future__ import annotations

import argparse

import torch
from derived_checkpoint import carry_over  # beside this script

import fewshot_sdk as fs


def averaged_weights(
    tuned: dict[str, torch.Tensor], start: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """``weight`` x ``tuned`` + (1 - ``weight``) x ``start``, tensor by tensor; what ``start`` has not is kept."""
    return {
        name: weight * value + (1 - weight) * start[name] if value.is_floating_point() and name in start else value
        for name, value in tuned.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="bundled model name or checkpoint folder (meta-fine-tuned)")
    parser.add_argument("--weight", type=float, required=True, help="share of the fine-tuned weights, 0..1")
    parser.add_argument("--image-size", type=int, help="input size of the new checkpoint (default: the same)")
    parser.add_argument("--resize-shorter", type=int, help="shorter side before the centre crop")
    parser.add_argument("--feature-norm", help="ProtoNet's feature_norm of the new checkpoint")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not 0 <= args.weight <= 1:
        parser.error("--weight must lie in [0, 1]")
    tuned = fs.load(args.checkpoint)
    preprocess = tuned.preprocess_config.model_dump()
    if args.image_size:
        preprocess["image_size"] = (args.image_size, args.image_size)
    if args.resize_shorter:
        preprocess["resize_shorter"] = args.resize_shorter
    settings = tuned.config.model_dump()
    if args.feature_norm:
        settings["feature_norm"] = args.feature_norm
    start = fs.create(tuned.method, backbone=tuned.backbone_config.model_dump(), **settings)
    learner = fs.create(tuned.method, backbone=tuned.backbone_config.model_dump(), preprocess=preprocess, **settings)
    learner.load_state_dict(averaged_weights(tuned.state_dict(), start.state_dict(), args.weight))
    carry_over(
        tuned,
        learner,
        "interpolation",
        {
            "method": "WiSE-FT weight-space average (Wortsman et al. 2022)",
            "fine_tuned_share": args.weight,
            "fine_tuned": str(args.checkpoint),
            "start": "the backbone's pretrained weights",
            "preprocess": preprocess,
            "method_config": settings,
        },
    )
    path = learner.save(args.out)
    print(f"wrote {path}: {args.weight} x {args.checkpoint} + {1 - args.weight:g} x its pretrained start")


if __name__ == "__main__":
    main()
