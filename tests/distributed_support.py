"""Functions the distributed tests run in spawned processes (they must be importable by name)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import FewShotError
from fewshot_sdk.methods.step_metrics import StepMetrics
from fewshot_sdk.train import distributed

#: Learners small enough to meta-train in float64 in a test, one per family the issue names.
SETTINGS = {
    "protonet": {"backbone": {"hidden": 8}},
    "maml": {"backbone": {"hidden": 8}, "n_way": 3, "inner_steps": 2},  # second order
    "reptile": {"backbone": {"hidden": 8}, "n_way": 3, "inner_steps": 2, "inner_batch": 100},
    "metanet": {"backbone": {"hidden": 8}},
}
RANK_SEEDS = (11, 12)


def learner(method: str) -> fs.Learner:
    torch.manual_seed(0)
    return fs.create(method, **SETTINGS[method]).double().train()


def episodes() -> list[Episode]:
    """Four 3-way 1-shot episodes of random images, the same in every process."""
    g = torch.Generator().manual_seed(5)
    return [
        Episode(
            torch.randn(3, 1, 28, 28, generator=g, dtype=torch.float64),
            torch.arange(3),
            torch.randn(6, 1, 28, 28, generator=g, dtype=torch.float64),
            torch.arange(3).repeat(2),
            3,
        )
        for _ in range(4)
    ]


def optimizer_for(model: fs.Learner) -> torch.optim.Optimizer | None:
    return torch.optim.Adam(model.parameters(), lr=1e-2) if model.uses_outer_optimizer else None


def one_meta_iteration_on_this_rank(rank: int, method: str, rendezvous: str, out: str) -> None:
    """Rank ``rank`` of 2 takes episodes [2r, 2r+1] of the meta-batch; rank 0 writes the updated weights."""
    distributed.join_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        model = learner(method)
        local = episodes()[2 * rank : 2 * rank + 2]
        torch.manual_seed(RANK_SEEDS[rank])  # the method's own random draws (label slots, minibatch order)
        model.train_step(local, optimizer_for(model), reduce_gradients=distributed.average_gradients)
        if rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    finally:
        dist.destroy_process_group()


def one_process_reference(method: str) -> dict[str, torch.Tensor]:
    """One process, the same four episodes and the same random draws: the meta-gradient is the mean over the
    meta-batch, computed in two halves (each with the seed its rank used) and averaged."""
    model = learner(method)
    optimizer = optimizer_for(model)
    all_episodes = episodes()
    halves = []
    for rank in (0, 1):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(RANK_SEEDS[rank])
        model.meta_gradients(all_episodes[2 * rank : 2 * rank + 2], StepMetrics())
        halves.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])
    for param, first, second in zip(model.parameters(), *halves, strict=True):
        param.grad = None if first is None else (first + second) / 2
    model.outer_update(optimizer)
    return model.state_dict()


def shard_evaluation(rank: int, rendezvous: str, out: str) -> None:
    from fewshot_sdk.train.evaluate import evaluate_episodes

    distributed.join_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        model = learner("protonet").eval()
        result = evaluate_episodes(model, evaluation_data(), 5, 1, 3, 9, seed=2, ranks=distributed.current())
        if rank == 0:
            Path(out).write_text(result.model_dump_json())
    finally:
        dist.destroy_process_group()


def evaluation_data():
    from fewshot_sdk.data.labelled import LabelledImages

    g = torch.Generator().manual_seed(8)
    images = torch.randn(8 * 5, 1, 28, 28, generator=g, dtype=torch.float64)
    return LabelledImages(images, torch.arange(8).repeat_interleave(5), tuple(f"c{i}" for i in range(8)))


def fail_on_rank_one() -> None:
    """Rank 1 raises at once; rank 0 waits in a collective that rank 1 never joins."""
    with distributed.process_group("cpu") as ranks:
        if ranks.rank == 1:
            raise FewShotError("the data of rank 1 is unreadable")
        distributed.barrier()
        raise AssertionError("rank 0 passed a barrier rank 1 never reached")


def worker_threads() -> None:
    """Each of 2 processes on this machine gets half the cores."""
    with distributed.process_group("cpu"):
        expected = max(1, (os.cpu_count() or 1) // 2)
        if torch.get_num_threads() != expected:
            raise FewShotError(f"{torch.get_num_threads()} threads, expected {expected}")


def train_on_two_ranks(rank: int, rendezvous: str, out: str) -> None:
    """A whole (tiny) meta_train on 2 ranks; each rank writes the weights and buffers it ends with."""
    from fewshot_sdk.data.labelled import LabelledImages
    from fewshot_sdk.train.loop import TrainConfig, meta_train

    distributed.join_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        g = torch.Generator().manual_seed(3)
        data = [
            LabelledImages(
                torch.randn(6 * 3, 1, 28, 28, generator=g),
                torch.arange(6).repeat_interleave(3),
                tuple(f"c{i}" for i in range(6)),
            )
            for _ in range(2)
        ]
        torch.manual_seed(rank)  # different starting weights: the run must begin from rank 0's
        model = fs.create("protonet", backbone={"hidden": 8}, feature_norm="centered-l2")
        config = TrainConfig(episodes=3, n_way=3, k_shot=1, q_queries=1, meta_batch=2, val_every=1, val_episodes=2,
                             val_n_way=3, val_q_queries=1)  # fmt: skip
        seen = []  # the centring mean each meta-update trains with, on this rank
        original = model.train_step

        def recording_step(*args, **kwargs):
            seen.append(model.feature_mean.clone())
            return original(*args, **kwargs)

        model.train_step = recording_step
        meta_train(model, data[0], data[1], config)
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file({**tensors, "seen_feature_means": torch.stack(seen)}, f"{out}{rank}")
    finally:
        dist.destroy_process_group()
