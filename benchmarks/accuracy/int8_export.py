"""int8 against float32 exported tasks: accuracy through the files on held-out classes, and onnxruntime speed.

Accuracy (``--data``): seeded N-way K-shot episodes of the model's held-out test classes, 15
queries a class. Each episode's task is adapted in torch, exported twice (float32, and int8
calibrated on that episode's support images) and its queries classified by each file through
onnxruntime; mean accuracy ± 1.96 sigma / sqrt(n), and how often the two files' answers agree.
A line per 50 episodes goes to stdout, so a run cut short still says how far it got.

Speed (``--speed``): one task adapted on ``--support``, both files, ``session.run`` on batches of
1 and 32 at 1 and 2 intra-op threads; median over interleaved blocks of calls.

    python benchmarks/accuracy/int8_export.py --model protonet-omniglot --data ../shared/data/omniglot --episodes 600
    python benchmarks/accuracy/int8_export.py --speed --model protonet-photos --support examples/photos/support
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.train.recipes import dataset_splits


def mean_ci(values: list[float]) -> str:
    mean = statistics.fmean(values)
    ci = 1.96 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return f"{100 * mean:.2f} ± {100 * ci:.2f}"


def session(path: Path, threads: int = 1) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def accuracy(args: argparse.Namespace) -> None:
    learner = fs.load(args.model)
    held_out = dataset_splits(args.data, learner).test
    sampler = EpisodeSampler(held_out, args.n_way, args.k_shot, 15, seed=args.seed)
    float32, int8, agree = [], [], []
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.episodes):
            episode = sampler.sample()
            task = learner.adapt(fs.SupportSet.from_tensors(episode.support_x, episode.support_y))
            queries, labels = episode.query_x.numpy(), episode.query_y.numpy()
            answers = []
            for name, quantize in (("f.onnx", None), ("i.onnx", "int8")):
                path = task.export_onnx(Path(folder) / name, overwrite=True, quantize=quantize)
                answers.append(session(path).run(["probs"], {"images": queries})[0].argmax(1))
            float32.append(float((answers[0] == labels).mean()))
            int8.append(float((answers[1] == labels).mean()))
            agree.append(float((answers[0] == answers[1]).mean()))
            if (index + 1) % 50 == 0 or index + 1 == args.episodes:
                print(
                    f"{index + 1} episodes ({time.time() - start:.0f} s): float32 {mean_ci(float32)}, "
                    f"int8 {mean_ci(int8)}, answers agree {100 * statistics.fmean(agree):.2f}%",
                    flush=True,
                )


def speed(args: argparse.Namespace) -> None:
    learner = fs.load(args.model)
    task = learner.adapt(fs.SupportSet.from_folder(args.support))
    shape = learner.preprocess_config.input_shape
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = {
            "float32": task.export_onnx(Path(folder) / "f.onnx"),
            "int8": task.export_onnx(Path(folder) / "i.onnx", quantize="int8"),
        }
        print(f"| {args.model} | threads | batch | float32 ms | int8 ms | int8 / float32 |")
        print("| --- | --- | --- | --- | --- | --- |")
        for threads in (1, 2):
            sessions = {name: session(path, threads) for name, path in paths.items()}
            for batch in (1, 32):
                x = torch.randn(batch, *shape, generator=generator).numpy()
                times: dict[str, list[float]] = {name: [] for name in sessions}
                for _ in range(args.blocks):  # interleaved blocks: both files see the same minute of the machine
                    for name, runner in sessions.items():
                        runner.run(["probs"], {"images": x})  # the block's warm-up
                        for _ in range(args.calls):
                            begin = time.perf_counter()
                            runner.run(["probs"], {"images": x})
                            times[name].append(time.perf_counter() - begin)
                ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
                print(
                    f"| | {threads} | {batch} | {ms['float32']:.2f} | {ms['int8']:.2f} | "
                    f"{ms['int8'] / ms['float32']:.2f}x |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="protonet-omniglot")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--support", type=Path, default=Path("examples/support"))
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    np.random.seed(args.seed)
    speed(args) if args.speed else accuracy(args)


if __name__ == "__main__":
    main()
