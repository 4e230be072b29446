"""Meta-training and evaluation across processes: torch.distributed, launched by torchrun.

Each rank takes ``meta_batch / world_size`` episodes of every meta-update from its own seeded sampler, computes
their meta-gradient with the method's ``meta_gradients``, and the ranks average ``.grad`` in one ``all_reduce``
before the method's ``outer_update``: N ranks x B/N episodes give the meta-gradient of 1 rank x B episodes. Not
DistributedDataParallel, deliberately: MAML differentiates through its inner loop with
``torch.autograd.grad(create_graph=True)`` on functional parameters, which DDP's gradient hooks do not support, and
Reptile's outer update is no gradient step; but every method writes its meta-update direction into ``.grad``
(Reptile: -(W - theta)), so one collective serves all of them.

Rank 0 validates, keeps the best weights, shows progress and writes files; the other ranks receive its kept weights
at the end. Batch norm stays per task (no synchronised statistics). Buffers (running statistics where a backbone
keeps them, ProtoNet's centring mean, which validation computes) are broadcast from rank 0 after each validation,
so every rank trains with what rank 0 validated. Backends: ``nccl`` on CUDA (rank r on ``cuda:LOCAL_RANK``),
``gloo`` on CPU.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from fewshot_sdk.errors import InputError

#: Ranks wait for rank 0 at every validation; a photo validation can take many minutes.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current() -> Ranks:
    """The ranks of the initialised default process group, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def uses_cuda(device_name: str) -> bool:
    """Whether a ``--device`` value puts the run on GPUs (``auto`` does when CUDA is usable)."""
    return device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())


@contextmanager
def process_group(device_name: str) -> Iterator[Ranks]:
    """Join the process group torchrun described in the environment (a no-op for a single process).

    On CUDA each rank takes ``cuda:LOCAL_RANK``; :func:`rank_device` gives the device string the run should use.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield current()
        return
    cuda = uses_cuda(device_name)
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    join_process_group("nccl" if cuda else "gloo")
    yield current()
    # Only on success: a rank that raises exits with the group as it is, so that its error is
    # reported before its peers fail on a collective it will never join.
    dist.destroy_process_group()


def join_process_group(backend: str, **options: Any) -> None:
    """``dist.init_process_group``, made safe to end: the group's threads are gone once it is destroyed.

    ``torch.distributed.nn.functional`` takes ``group.WORLD`` as the default argument of its collectives when it is
    imported, and ``torch._dynamo`` imports it (the first optimiser built does). Imported after the group exists,
    those defaults keep the destroyed group and its worker threads alive until the interpreter exits; a worker still
    dropping the last collective's tensors then needs the GIL during finalisation, and the process aborts
    ("terminate called without an active exception"; 3 runs of 20 of the two-rank MAML test). Imported first, the
    defaults are ``None``.
    """
    import torch.distributed.nn.functional  # noqa: F401  (the import is the point; see above)

    dist.init_process_group(backend, **{"timeout": COLLECTIVE_TIMEOUT, **options})


def rank_device(device_name: str, ranks: Ranks) -> str:
    """The device of this rank: its own GPU when the run is on CUDA and spans several processes."""
    if not ranks.distributed:
        return device_name
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank}"
    if device_name.startswith("cuda:"):
        raise InputError(
            f"--device {device_name} names one GPU, but {ranks.world_size} processes need one each: use cuda"
        )
    return device_name


def check_world(meta_batch: int, ranks: Ranks) -> int:
    """Episodes per rank per meta-update; the meta-batch must split evenly over the ranks."""
    if meta_batch % ranks.world_size:
        raise InputError(
            f"--meta-batch {meta_batch} does not split over {ranks.world_size} processes: use a multiple of "
            f"{ranks.world_size} (each process takes meta_batch / processes episodes of every meta-update)"
        )
    return meta_batch // ranks.world_size


def rank_seed(seed: int, ranks: Ranks | None = None) -> int:
    """Rank r's episode seed (r: this process's by default): ``seed`` itself on rank 0, so one process samples what
    it always did."""
    return seed + 1_000_003 * (ranks or current()).rank


def average_gradients(module: torch.nn.Module) -> None:
    """Average ``.grad`` of every trainable parameter over the ranks, in one ``all_reduce``.

    A parameter without a gradient on some rank counts as zero there; one without a gradient on every rank keeps
    ``grad=None``, so an optimiser skips it exactly as it does in one process.
    """
    ranks = current()
    if not ranks.distributed:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=params[0].dtype, device=params[0].device)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([present, *(g.reshape(-1) for g in grads)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ranks.world_size
    any_rank = flat[: len(params)] > 0
    chunks = torch.split(flat[len(params) :], [g.numel() for g in grads])
    for param, chunk, has_grad in zip(params, chunks, any_rank.tolist(), strict=True):
        param.grad = chunk.view_as(param).clone() if has_grad else None


def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (start of a run, and the kept weights at its end)."""
    if not current().distributed:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers on every rank: what its validation computed (ProtoNet's centring mean)."""
    if not current().distributed:
        return
    with torch.no_grad():
        for tensor in module.buffers():
            dist.broadcast(tensor, src)


def broadcast_object(value: T, src: int = 0) -> T:
    """A picklable value from rank ``src`` on every rank."""
    if not current().distributed:
        return value
    holder: list[Any] = [value]
    dist.broadcast_object_list(holder, src)
    return holder[0]


def gather_objects(value: T) -> list[T]:
    """Every rank's value, in rank order, on every rank."""
    ranks = current()
    if not ranks.distributed:
        return [value]
    gathered: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if current().distributed:
        dist.barrier()
