"""Latency of an exported task under onnxruntime vs the torch AdaptedModel, per query batch.

The task: the bundled model adapted to ``--support`` (default ``examples/support``, 3
classes x 5 shots of real Omniglot; ``examples/photos/support`` for the photo model).
Both sides take the same model-ready batch [B, C, H, W] and return every class's
probability: ``task.predict(batch)`` (torch, inference mode, with
its input checks) vs ``OnnxClassifier.run(batch)`` (onnxruntime, with its input
checks). Both are given the same number of CPU threads; the two measurements are
interleaved so that drift in machine load hits both alike. On a machine with a
usable GPU the CUDA rows are added (torch on CUDA, onnxruntime's CUDA provider).

    python benchmarks/speed/onnx_latency.py [--model protonet-omniglot] [--threads 1] \\
        [--support examples/support] [--batch 1 --batch 32] [--out benchmarks/results/onnx_latency_cpu.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name, median_seconds, report

import fewshot_sdk as fs
from fewshot_sdk.export.runtime import OnnxClassifier, cuda_usable

REPO = Path(__file__).resolve().parents[2]
BATCHES = (1, 32, 256)


def repeats_for(batch: int, budget: int) -> int:
    """Fewer repeats for big batches: about the same wall time per row."""
    return max(10, budget // max(1, batch // 8))


def measure(
    model: str, threads: int, budget: int, support_dir: Path, batches: tuple[int, ...]
) -> tuple[list[str], dict[str, float]]:
    torch.set_num_threads(threads)
    support = fs.SupportSet.from_folder(support_dir)
    learner = fs.load(model)
    task = learner.adapt(support)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = task.export_onnx(Path(folder) / "task.onnx")
        export_s = time.perf_counter() - start
        size_kb = path.stat().st_size / 1024
        targets = [("CPU", "cpu", ["CPUExecutionProvider"])]
        if torch.cuda.is_available() and cuda_usable():
            targets.append(("GPU", "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]))
        for label, device, providers in targets:
            runner = OnnxClassifier(path, providers=providers, threads=threads)
            on_device = task if device == "cpu" else fs.load(model, device=device).adapt(support)
            generator = torch.Generator().manual_seed(0)
            for batch in batches:
                x = torch.randn(batch, *learner.preprocess_config.input_shape, generator=generator)
                x_np = x.numpy()
                diff = np.abs(runner.run(x_np)[1] - on_device.predict(x).probs.numpy()).max()
                repeats = repeats_for(batch, budget)
                torch_times, onnx_times = [], []
                per_round = repeats // 5 + 1
                for _ in range(5):  # interleaved
                    torch_times.append(median_seconds(lambda x=x, t=on_device: t.predict(x), per_round, warmup=3))
                    onnx_times.append(median_seconds(lambda x_np=x_np, r=runner: r.run(x_np), per_round, warmup=3))
                torch_s, onnx_s = sorted(torch_times)[2], sorted(onnx_times)[2]
                rows.append(
                    f"| {model} | {label} | {batch} | {1e3 * torch_s:.3f} | {1e3 * onnx_s:.3f} | "
                    f"{torch_s / onnx_s:.2f}x | {1e6 * onnx_s / batch:.1f} | {diff:.1e} |"
                )
                print(rows[-1], flush=True)
    return rows, {"export_s": export_s, "size_kb": size_kb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="Bundled model or checkpoint (repeatable).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and onnxruntime alike.")
    parser.add_argument("--budget", type=int, default=200, help="Repeats at batch 1 (fewer for larger batches).")
    parser.add_argument("--support", type=Path, default=Path("examples/support"), help="Relative to the repo.")
    parser.add_argument("--batch", type=int, action="append", help="Query batch sizes (repeatable).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    models = args.model or ["protonet-omniglot"]
    batches = tuple(args.batch or BATCHES)

    import onnxruntime

    header = [
        "# ONNX export: latency per query batch, onnxruntime vs the torch AdaptedModel\n",
        f"device: {device_name()}; {args.threads} thread(s) for both; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; task: the model adapted to `{args.support}`; "
        "median of interleaved runs after warm-up.\n",
        "Both sides map a model-ready batch to probabilities with their input checks: `task.predict(batch)` vs "
        "`OnnxClassifier(path).run(batch)`.\n",
        "| model | device | batch | torch predict (ms) | onnxruntime (ms) | speed-up | onnxruntime µs/image "
        "| max abs Δprobs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows, notes = [], []
    for model in models:
        model_rows, info = measure(model, args.threads, args.budget, REPO / args.support, batches)
        rows.extend(model_rows)
        notes.append(f"- {model}: export took {info['export_s']:.1f} s; the .onnx file is {info['size_kb']:.0f} KiB.")
    if not (torch.cuda.is_available() and cuda_usable()):
        notes.append("- No usable CUDA device on this machine: GPU rows not measured.")
    command = "python benchmarks/speed/onnx_latency.py " + " ".join(f"--model {m}" for m in models)
    command += f" --support {args.support} --budget {args.budget}"
    command += "".join(f" --batch {b}" for b in batches)
    text = "\n".join([*header, *rows, "", *notes, "", f"command: `{command} --threads {args.threads}`"])
    report(text, args.out)


if __name__ == "__main__":
    main()
