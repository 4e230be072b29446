"""CPU speed of the photo backbone: images/s of EfficientNet-Lite0 embedding, by resolution and threads.

The floor first: Lite0 is 0.39 GMACs (0.78 GFLOPs) per 224x224 image, so a core that
sustains ~50 GFLOP/s in fp32 convolutions would embed ~60 images/s; depthwise layers
run far below a core's peak (few FLOPs per byte), so real figures sit well under it.
FLOPs scale with pixels: 192x192 costs 0.73x and 160x160 0.51x of 224x224.

Each figure is the median over repeated batches after warm-up, model in eval mode under
``torch.inference_mode`` (what ``adapt`` and ``predict`` run), including the chunking the
SDK applies to big batches.

    python benchmarks/photo_speed.py --out benchmarks/results/photo_speed_cpu.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name, median_seconds

import fewshot_sdk as fs

RESOLUTIONS = ((224, 256), (192, 219), (160, 183))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = [
        "# Photo backbone speed on CPU (EfficientNet-Lite0 embedding)",
        "",
        f"device: {device_name()}; torch {torch.__version__}; batch {args.batch}; median of {args.repeats} "
        "batches after 2 warm-up batches.",
        "",
        "| resolution | threads | images/s | ms/image |",
        "| --- | ---: | ---: | ---: |",
    ]
    for size, shorter in RESOLUTIONS:
        learner = fs.create("protonet", backbone="efficientnet-lite0", image_size=size, resize_shorter=shorter)
        x = torch.randn(args.batch, 3, size, size)
        for threads in (1, 2):
            torch.set_num_threads(threads)

            def embed(learner: fs.Learner = learner, x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    learner.backbone(x)

            seconds = median_seconds(embed, repeats=args.repeats, warmup=2)
            lines.append(
                f"| {size}x{size} | {threads} | {args.batch / seconds:.1f} | {1e3 * seconds / args.batch:.1f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"command: `python benchmarks/photo_speed.py --batch {args.batch} --repeats {args.repeats}`"]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
