"""Where the time of `fewshot classify` goes for 5 classes x 5 photos + 1 query from disk, in one process.

The whole command is timed from outside with ``/usr/bin/time -v fewshot classify --support
examples/photos/support --query examples/photos/queries/panda_0020.jpg`` (median of 5 runs);
this script splits one process's time into its parts: importing torch, importing the SDK
and loading the bundled photo model, adapting (decode + embed 25 photos), predicting one
photo; then the same adapt / predict again, warm.

    python benchmarks/speed/photo_latency.py
"""

from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    start = time.perf_counter()
    import torch

    imported_torch = time.perf_counter()
    import fewshot_sdk as fs

    learner = fs.load("protonet-photos")
    loaded = time.perf_counter()
    support_dir, query = REPO / "examples/photos/support", REPO / "examples/photos/queries/panda_0020.jpg"
    task = learner.adapt(fs.SupportSet.from_folder(support_dir))
    adapted = time.perf_counter()
    task.predict(query)
    predicted = time.perf_counter()
    warm = []
    for _ in range(3):
        a = time.perf_counter()
        task = learner.adapt(fs.SupportSet.from_folder(support_dir))
        b = time.perf_counter()
        task.predict(query)
        warm.append((b - a, time.perf_counter() - b))
    warm_adapt, warm_predict = sorted(warm)[1]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"| import torch | {imported_torch - start:.2f} s |")
    print(f"| import fewshot_sdk + load protonet-photos | {loaded - imported_torch:.2f} s |")
    print(f"| adapt: 25 photos from disk (first call) | {adapted - loaded:.2f} s |")
    print(f"| predict: 1 photo from disk (first call) | {1e3 * (predicted - adapted):.0f} ms |")
    print(f"| adapt, warm (median of 3) | {warm_adapt:.2f} s |")
    print(f"| predict, warm (median of 3) | {1e3 * warm_predict:.0f} ms |")


if __name__ == "__main__":
    main()
