"""The public API's hot paths, timed in whichever fewshot-sdk ``PYTHONPATH`` names: a before/after of a change.

Each round starts one process per tree, alternating trees (so a slow minute of the machine falls on
both), and each process times every path with warm-up and takes the median of its calls:

- ``predict b1`` / ``predict b64``: ``task.predict`` of 1 and 64 model-ready glyphs, ProtoNet and MAML;
- ``maml adapt+predict``: ``maml-omniglot`` adapting to 5 glyphs (5-way 1-shot) and predicting 75;
- ``photo adapt 25`` / ``photo predict 1``: ``protonet-photos`` on 25 support photos and one query;
- ``export``: the first ``task.export_onnx`` of a process (``--export``: its own process per model).

    python benchmarks/speed/api_paths.py --tree BEFORE_ROOT --tree AFTER_ROOT --rounds 5 \\
        --out benchmarks/results/api_paths_cpu.md

Only the public API is used, so the script runs against any release. Threads: ``--threads`` (1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_seconds

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "examples" / "photos" / "support"
GLYPHS = ROOT / "examples" / "support"  # real Omniglot: an export's parity check on noise can fail its tolerance


def measure_paths(repeats: int) -> dict[str, float]:
    import torch

    import fewshot_sdk as fs

    figures: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    support_x = torch.randn(5, 1, 28, 28, generator=generator)
    labels = torch.arange(5)
    one, batch = torch.randn(1, 1, 28, 28, generator=generator), torch.randn(64, 1, 28, 28, generator=generator)
    queries = torch.randn(75, 1, 28, 28, generator=generator)
    for model in ("protonet-omniglot", "maml-omniglot"):
        learner = fs.load(model)
        support = fs.SupportSet.from_tensors(support_x, labels, [f"c{i}" for i in range(5)])
        task = learner.adapt(support)
        figures[f"{model} predict b1"] = median_seconds(lambda task=task: task.predict(one), repeats * 20)
        figures[f"{model} predict b64"] = median_seconds(lambda task=task: task.predict(batch), repeats * 4)
        if model == "maml-omniglot":
            figures[f"{model} adapt+predict 5x1 +75"] = median_seconds(
                lambda learner=learner, support=support: learner.adapt(support).predict(queries), repeats * 2
            )
    photos = fs.SupportSet.from_folder(PHOTOS)
    learner = fs.load("protonet-photos")
    x, y = photos.to_tensors(learner.preprocessor)
    tensors = fs.SupportSet.from_tensors(x, y, photos.class_names)
    task = learner.adapt(tensors)
    figures["protonet-photos adapt 25"] = median_seconds(lambda: learner.adapt(tensors), repeats, warmup=1)
    figures["protonet-photos predict b1"] = median_seconds(lambda: task.predict(x[:1]), repeats * 4)
    return figures


def measure_export(model: str) -> dict[str, float]:
    import fewshot_sdk as fs

    learner = fs.load(model)
    task = learner.adapt(fs.SupportSet.from_folder(PHOTOS if model == "protonet-photos" else GLYPHS))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        task.export_onnx(Path(folder) / "t.onnx")
        return {f"{model} first export": time.perf_counter() - start}


def run_in(tree: Path, arguments: list[str], threads: int) -> dict[str, float]:
    environment = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(  # from the tree itself: the current folder comes first on the path
        [sys.executable, __file__, *arguments], env=environment, check=True, capture_output=True, text=True, cwd=tree
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, action="append", help="a fewshot-sdk checkout (repeat: before, after)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--paths", action="store_true", help=argparse.SUPPRESS)  # one process's measurement
    parser.add_argument("--export", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paths or args.export:
        import torch

        torch.set_num_threads(args.threads)
        figures = measure_export(args.export) if args.export else measure_paths(args.repeats)
        print(json.dumps(figures))
        return
    trees = [tree.resolve() for tree in args.tree or [ROOT]]
    seen: dict[Path, dict[str, list[float]]] = {tree: {} for tree in trees}
    jobs = [["--paths", "--repeats", str(args.repeats)]] + [
        ["--export", model] for model in ("protonet-omniglot", "maml-omniglot", "protonet-photos")
    ]
    for _ in range(args.rounds):
        for job in jobs:
            for tree in trees:  # alternate trees within a round
                for name, value in run_in(tree, [*job, "--threads", str(args.threads)], args.threads).items():
                    seen[tree].setdefault(name, []).append(value)
    names = list(seen[trees[0]])
    header = "| path | " + " | ".join(f"`{tree.name}` (ms)" for tree in trees)
    header += " | after / before |" if len(trees) == 2 else " |"
    lines = [header, "|" + " --- |" * (len(trees) + 1 + (len(trees) == 2))]
    for name in names:
        medians = [statistics.median(seen[tree][name]) * 1e3 for tree in trees]
        row = f"| {name} | " + " | ".join(f"{m:.2f}" for m in medians)
        row += f" | {medians[1] / medians[0]:.2f}x |" if len(trees) == 2 else " |"
        lines.append(row)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
