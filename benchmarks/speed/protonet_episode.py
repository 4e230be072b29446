"""A ProtoNet episode (adapt to the support set, classify the queries), the SDK against easyfsl's pattern.

``protonet-omniglot``'s weights (Conv4, 28x28 glyphs), episodes of random pixels (the time does not
depend on them) at 5-way 5-shot, 20-way 5-shot and 100-way 1-shot, 15 queries a class:

- ``sdk``: ``learner.adapt(fs.SupportSet.from_tensors(...)).predict(queries).probs``, the public API
  with its input checks, open-set scores and ``Prediction``;
- ``easyfsl-style``: easyfsl 1.5's ``PrototypicalNetworks`` pattern written out
  (``process_support_set``: the backbone's features of the support, one mean per label in a loop;
  ``forward``: the queries' features, ``-torch.cdist`` to the prototypes, softmax), in eval mode
  under ``torch.no_grad``, on the network an easyfsl user holds: the same weights as a plain
  ``nn.Sequential`` Conv4 (NCHW, batch norm as trained). easyfsl itself cannot be imported here: its
  package imports torchvision, which has no build for this CPU torch;
- ``easyfsl-style, SDK backbone``: the same code on the SDK's own backbone module (channels-last,
  batch norm folded for inference, chunked), so that the ratio to it is the method code's alone.

easyfsl scores by the euclidean distance, the SDK by its square (Snell et al.): the probabilities
differ but the predicted classes do not, which is checked before timing. Each path runs in its own
blocks of calls, the blocks alternating (:func:`timing.own_blocks`).

    OMP_NUM_THREADS=1 python benchmarks/speed/protonet_episode.py [--rounds 40]
        [--out benchmarks/results/protonet_episode_cpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inner_loop import plain_copy
from timing import device_name, own_blocks, report

import fewshot_sdk as fs

EPISODES = ((5, 5), (20, 5), (100, 1))
QUERIES = 15


class EasyFSLStylePrototypes:
    """easyfsl's ``PrototypicalNetworks`` (``FewShotClassifier``) on a backbone, as its users call it."""

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone.eval()

    def process_support_set(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> None:
        features = self.backbone(support_images)
        self.prototypes = torch.cat(
            [features[torch.nonzero(support_labels == label)].mean(0) for label in range(len(support_labels.unique()))]
        )

    def __call__(self, query_images: torch.Tensor) -> torch.Tensor:
        return (-torch.cdist(self.backbone(query_images), self.prototypes)).softmax(-1)


def paths(learner: fs.Learner, n_way: int, k_shot: int) -> dict[str, Callable[[], torch.Tensor]]:
    generator = torch.Generator().manual_seed(n_way * 10 + k_shot)
    support_x = torch.rand(n_way * k_shot, 1, 28, 28, generator=generator)
    support_y = torch.arange(n_way).repeat_interleave(k_shot)
    query_x = torch.rand(n_way * QUERIES, 1, 28, 28, generator=generator)
    users_network = nn.Sequential(plain_copy(learner.backbone.body), nn.Flatten())

    def sdk() -> torch.Tensor:
        return learner.adapt(fs.SupportSet.from_tensors(support_x, support_y)).predict(query_x).probs

    def easyfsl(backbone: nn.Module) -> Callable[[], torch.Tensor]:
        model = EasyFSLStylePrototypes(backbone)

        def episode() -> torch.Tensor:
            with torch.no_grad():
                model.process_support_set(support_x, support_y)
                return model(query_x)

        return episode

    return {
        "sdk": sdk,
        "easyfsl-style": easyfsl(users_network),
        "easyfsl-style, SDK backbone": easyfsl(learner.backbone),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="timed episodes of each path per episode shape")
    parser.add_argument("--model", default="protonet-omniglot")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    learner = fs.load(args.model)
    lines = [
        f"# A ProtoNet episode: the SDK against easyfsl's pattern (`{args.model}`, 15 queries a class)\n",
        f"device: {device_name()}; torch {torch.__version__}; {args.rounds} episodes of each path in 4 alternating "
        "blocks after 5 warm-up ones each; medians\n",
        "| episode | sdk ms | easyfsl-style ms | easyfsl-style, SDK backbone ms | sdk / easyfsl-style "
        "| sdk / easyfsl-style on the SDK backbone |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n_way, k_shot in EPISODES:
        runs = paths(learner, n_way, k_shot)
        answers = {name: run().argmax(-1) for name, run in runs.items()}
        assert all(torch.equal(a, answers["sdk"]) for a in answers.values()), "the paths predict different classes"
        samples = own_blocks(runs, args.rounds)
        ms = {name: 1e3 * statistics.median(times) for name, times in samples.items()}
        line = (
            f"| {n_way}-way {k_shot}-shot | {ms['sdk']:.2f} | {ms['easyfsl-style']:.2f} | "
            f"{ms['easyfsl-style, SDK backbone']:.2f} | {ms['sdk'] / ms['easyfsl-style']:.2f}x | "
            f"{ms['sdk'] / ms['easyfsl-style, SDK backbone']:.2f}x |"
        )
        print(line, flush=True)
        lines.append(line)
    lines += ["", f"command: `OMP_NUM_THREADS=1 python benchmarks/speed/protonet_episode.py --rounds {args.rounds}`"]
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
