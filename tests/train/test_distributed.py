"""Meta-training and evaluation over 2 processes (gloo on CPU) give what one process gives."""

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from distributed_support import (
    evaluation_data,
    learner,
    one_meta_iteration_on_this_rank,
    one_process_reference,
    shard_evaluation,
    train_on_two_ranks,
)
from safetensors.torch import load_file

from fewshot_sdk.cli.launch import failure_report, launch
from fewshot_sdk.config import AccuracyResult
from fewshot_sdk.errors import FewShotError
from fewshot_sdk.train.evaluate import evaluate_episodes


@pytest.mark.parametrize("method", ["protonet", "maml", "reptile", "metanet"])
def test_one_meta_iteration_on_two_ranks_equals_one_process_on_the_same_episodes(method, tmp_path):
    out = tmp_path / "rank0.safetensors"
    mp.start_processes(
        one_meta_iteration_on_this_rank,
        args=(method, str(tmp_path / "rendezvous"), str(out)),
        nprocs=2,
        start_method="spawn",
    )
    distributed = load_file(str(out))
    reference = one_process_reference(method)
    before = learner(method).state_dict()
    moved = max(float((reference[k] - before[k]).abs().max()) for k in reference if reference[k].is_floating_point())
    assert moved > 1e-4  # the meta-iteration changed the weights, so equality below means something
    for name, tensor in reference.items():
        if tensor.is_floating_point() and "running" not in name:  # batch-norm running statistics stay per rank
            assert float((distributed[name] - tensor).abs().max()) <= 1e-6, name


def test_sharded_evaluation_equals_one_process_exactly(tmp_path):
    out = tmp_path / "result.json"
    mp.start_processes(shard_evaluation, args=(str(tmp_path / "rendezvous"), str(out)), nprocs=2, start_method="spawn")
    sharded = AccuracyResult.model_validate_json(out.read_text())
    single = evaluate_episodes(learner("protonet").eval(), evaluation_data(), 5, 1, 3, 9, seed=2)
    assert (sharded.accuracy, sharded.ci95) == (single.accuracy, single.ci95)


def test_a_failing_rank_brings_the_group_down_with_its_error_in_bounded_time():
    start = time.perf_counter()
    with pytest.raises(FewShotError, match="rank 1: the data of rank 1 is unreadable"):
        launch("distributed_support:fail_on_rank_one", {}, 2)
    assert time.perf_counter() - start < 90


def test_the_rank_that_wrote_its_error_is_named_even_when_only_a_peer_was_seen_failing(tmp_path):
    # The raising rank may still be exiting when its peer's failure is noticed; the launcher then stops it.
    (tmp_path / "rank1.txt").write_text("the data of rank 1 is unreadable\n")
    peer = SimpleNamespace(timestamp=1.0, exitcode=1)
    assert failure_report(tmp_path, {0: peer}) == "rank 1: the data of rank 1 is unreadable"
    (tmp_path / "rank1.txt").unlink()
    assert failure_report(tmp_path, {0: peer}) == "rank 0 exited with status 1; its output is above"


def test_worker_processes_split_the_cores():
    launch("distributed_support:worker_threads", {}, 2)


def fewshot(*args):
    command = [sys.executable, "-c", "from fewshot_sdk.cli.app import app; app()", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_cli_trains_on_two_processes_and_evaluates_sharded_with_the_single_process_figures(
    minimal_omniglot_dir, tmp_path
):
    out = tmp_path / "two"
    trained = fewshot("train", "--out", out, "--data", minimal_omniglot_dir, "--episodes", 2, "--n-way", 5,
                      "--meta-batch", 2, "--val-every", 2, "--val-episodes", 3, "--nproc-per-node", 2)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "best validation accuracy" in trained.stderr and (out / "weights.safetensors").is_file()
    evaluate = ("evaluate", "--model", out, "--data", minimal_omniglot_dir, "--episodes", 7, "--json")
    single, sharded = fewshot(*evaluate), fewshot(*evaluate, "--nproc-per-node", 2)
    assert single.returncode == 0 and sharded.returncode == 0, sharded.stderr
    assert json.loads(single.stdout)["episodes"] == json.loads(sharded.stdout)["episodes"]


def test_process_counts_that_cannot_work_are_refused_before_starting(minimal_omniglot_dir, tmp_path):
    uneven = fewshot("train", "--out", tmp_path / "x", "--data", minimal_omniglot_dir, "--meta-batch", 3,
                     "--nproc-per-node", 2)  # fmt: skip
    assert uneven.returncode == 2 and "--meta-batch 3 does not split over 2 processes" in uneven.stderr
    too_many = fewshot("train", "--out", tmp_path / "x", "--data", minimal_omniglot_dir, "--meta-batch", 512,
                       "--nproc-per-node", 512)  # fmt: skip
    assert too_many.returncode == 2 and "CPU cores" in too_many.stderr and not (tmp_path / "x").exists()
    assert "Traceback" not in uneven.stderr + too_many.stderr


def test_every_rank_ends_with_the_kept_weights_and_the_buffers_rank_0_validated(tmp_path):
    out = str(tmp_path / "rank")
    mp.start_processes(train_on_two_ranks, args=(str(tmp_path / "rendezvous"), out), nprocs=2, start_method="spawn")
    first, second = load_file(out + "0"), load_file(out + "1")
    assert float(first["feature_mean"].abs().max()) > 0  # ProtoNet's centring mean, computed by validation
    assert float(first["seen_feature_means"][1:].abs().max()) > 0  # ...and trained with after the first one
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


GROUP_LIFETIME = """
import os, tempfile
import torch.distributed as dist
from fewshot_sdk.train.distributed import join_process_group
threads = lambda: len(os.listdir("/proc/self/task"))
alone = threads()
join_process_group("gloo", init_method=f"file://{tempfile.mkdtemp()}/rendezvous", rank=0, world_size=1)
joined = threads()
import torch._dynamo  # what the first optimiser imports, after the group exists
dist.destroy_process_group()
print(alone, joined, threads())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads through /proc")
def test_a_destroyed_group_leaves_no_threads_behind_for_the_interpreter_exit_to_abort_on():
    # A group kept alive past destroy_process_group keeps its gloo workers, and one still dropping a tensor of the
    # last collective when the interpreter finalises aborts the process (the two-rank MAML test, 3 runs of 20).
    ran = subprocess.run([sys.executable, "-c", GROUP_LIFETIME], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    alone, joined, destroyed = map(int, ran.stdout.split())
    assert joined > alone and destroyed == alone
