"""Conv4's memory layout on CPU: the SDK's channels-last against plain NCHW, in inference and meta-training.

oneDNN reads a convolution's input strides as the layout to answer in. A one-channel glyph
batch counts as both NCHW and channels-last contiguous, and with its default strides the first
convolution takes oneDNN's slow NCHW path and answers NCHW, and so does every layer after it.
The SDK's Conv4 views the input with channels-last strides (``as_channels_last``) and keeps
every convolution's output channels-last. This script times the two layouts on the same weights,
interleaved round by round in one process (shuffled order, :func:`timing.interleaved_seconds`):

- ``predict``: a 75-query forward in eval mode without a graph (``protonet-omniglot``'s Conv4);
- ``protonet``, ``fomaml``, ``maml`` (second order, 1 inner step): one meta-update of 4 random
  5-way 1-shot episodes with 15 queries per class (``train_step``), weights reset every round so
  that both layouts train the same network.

    python benchmarks/conv4_layout.py [--rounds 15] [--out benchmarks/results/conv4_layout_cpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inner_loop import make_episode, plain_copy
from timing import device_name, interleaved_seconds, report

import fewshot_sdk as fs


def predict_paths() -> dict[str, Callable[[], object]]:
    learner = fs.load("protonet-omniglot").eval()
    plain = plain_copy(learner)
    queries = torch.randn(75, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    def forward(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return model.backbone(queries)

        return run

    torch.testing.assert_close(forward(learner)(), forward(plain)(), rtol=1e-4, atol=1e-4)
    return {"channels-last": forward(learner), "nchw": forward(plain)}


def train_paths(method: str) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    episodes = [make_episode(seed) for seed in range(4)]
    options = {} if method == "protonet" else {"n_way": 5, "inner_steps": 1}
    learner = fs.create(method, **options).train()
    start = {name: value.clone() for name, value in learner.state_dict().items()}
    plain = plain_copy(learner)

    def meta_update(model: fs.Learner) -> Callable[[], object]:
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)

        def run() -> object:
            model.load_state_dict(start)
            return model.train_step(episodes, optimizer)

        return run

    return {"channels-last": meta_update(learner), "nchw": meta_update(plain)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Conv4 on CPU: channels-last (the SDK) vs plain NCHW, the same weights\n",
        f"device: {device_name()}; torch {torch.__version__}; {args.rounds} interleaved rounds after warm-up, "
        "medians; ratio = median of the per-round ratios\n",
        "| workload | channels-last ms | NCHW ms | channels-last / NCHW |",
        "| --- | --- | --- | --- |",
    ]
    workloads = {"predict (75 queries)": predict_paths}
    workloads |= {
        f"{method} meta-update (4 episodes)": lambda m=method: train_paths(m)
        for method in ("protonet", "fomaml", "maml")
    }
    for name, make in workloads.items():
        seconds = interleaved_seconds(make(), args.rounds, warmup=2)
        ratio = statistics.median(a / b for a, b in zip(seconds["channels-last"], seconds["nchw"], strict=True))
        lines.append(
            f"| {name} | {1e3 * statistics.median(seconds['channels-last']):.1f} | "
            f"{1e3 * statistics.median(seconds['nchw']):.1f} | {ratio:.2f}x |"
        )
    lines += ["", f"command: `python benchmarks/conv4_layout.py --rounds {args.rounds}`"]
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
