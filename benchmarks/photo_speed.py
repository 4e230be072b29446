"""CPU speed of the photo backbone: images/s of EfficientNet-Lite0 embedding, by resolution and threads.

The floor first: Lite0 is ~0.40 G multiply-adds (0.80 GFLOPs) per 224x224 image and
scales with pixels (0.59 GFLOPs at 192, 0.41 at 160). A core with two AVX-512 FMA units at
~2.5 GHz peaks near 160 GFLOP/s in fp32, so two cores could embed ~540 photos/s at 192x192
if every layer were compute-bound; the depthwise layers are not (a few FLOPs per byte), so
the real figures sit far below that (the table's 192x192 rows are ~13-15% of it).

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
    lines += [
        "",
        "Floor (see the script's docstring): ~0.59 GFLOPs per 192x192 image, ~320 GFLOP/s fp32 peak on 2 "
        "AVX-512 cores, i.e. ~540 images/s if compute-bound; depthwise convolutions are memory-bound.",
        "",
        f"command: `python benchmarks/photo_speed.py --batch {args.batch} --repeats {args.repeats}`",
    ]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
