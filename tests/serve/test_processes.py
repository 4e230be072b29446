"""Real processes: replicas of ``fewshot serve`` over one folder serve the same tasks, and a writer killed
with SIGKILL in the middle of a task's write leaves every task loadable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import fewshot_sdk as fs
from fewshot_sdk.serve import tasks_store
from fewshot_sdk.serve.tasks_store import TaskStore

KEY = "replica-test-key-0123456789"


def test_replicas_over_one_folder_serve_the_same_tasks(server, photos, tmp_path):
    """One plain process and one with two uvicorn workers: whichever answers, it is the same task."""
    tasks = tmp_path / "tasks"
    headers = {"X-API-Key": KEY}
    with (
        server(tasks, env={"FEWSHOT_API_KEY": KEY}) as (first,),
        server(tasks, "--workers", "2", env={"FEWSHOT_API_KEY": KEY}) as (second,),
    ):
        made = httpx.post(
            f"{first}/tasks", files=photos.support(["flamingo", "laptop", "panda"]), headers=headers, timeout=60
        )
        assert made.status_code == 201, made.text
        task_id = made.json()["id"]
        answer = httpx.post(
            f"{second}/tasks/{task_id}/predict", files=photos.queries("panda_0020.jpg"), headers=headers, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["class_names"] == ["panda"]

        grown = httpx.post(
            f"{second}/tasks/{task_id}/classes", files=photos.support(["pizza"]), headers=headers, timeout=60
        )
        assert grown.status_code == 200, grown.text
        for url in (first, second, second):  # the other process, and (likely) both workers
            shown = httpx.get(f"{url}/tasks/{task_id}", headers=headers, timeout=60).json()
            assert [c["name"] for c in shown["classes"]] == ["flamingo", "laptop", "panda", "pizza"]
            pizza = httpx.post(
                f"{url}/tasks/{task_id}/predict", files=photos.queries("pizza_0020.jpg"), headers=headers, timeout=60
            )
            assert pizza.json()["class_names"] == ["pizza"]

        assert httpx.delete(f"{first}/tasks/{task_id}", headers=headers, timeout=60).status_code == 204
        gone = httpx.get(f"{second}/tasks/{task_id}", headers=headers, timeout=60)
        assert gone.status_code == 404 and set(gone.json()) == {"error"}
        assert httpx.get(f"{second}/tasks", timeout=60).status_code == 401  # the key reached the workers


WRITER = """
import sys, time
import fewshot_sdk as fs
import fewshot_sdk.task.adapted as adapted
from fewshot_sdk.serve.tasks_store import TaskStore

root, task_id, mode, photos = sys.argv[1:5]
store = TaskStore(root, fs.load("protonet-photos"), "protonet-photos")
pizza = {"pizza": sorted(str(p) for p in __import__("pathlib").Path(photos).iterdir())}
if mode == "stall":
    def stalled(path, model):  # task.save has written task.safetensors and is about to write task.json
        print("WRITING", flush=True)
        time.sleep(600)
    adapted.write_json = stalled
    store.add_classes(task_id, pizza)
else:
    while True:
        store.add_classes(task_id, pizza)
        print("ADDED", flush=True)
        store.remove_classes(task_id, ["pizza"])
        print("REMOVED", flush=True)
"""


def writer(root, task_id, mode, photos) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), task_id, mode, str(photos.support_dir / "pizza")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(process: subprocess.Popen, word: str, times: int = 1, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < times:
        line = process.stdout.readline()
        assert line or process.poll() is None, f"the writer exited: {process.stdout.read()}"
        assert time.monotonic() < deadline, f"no {word} from the writer within {timeout} s"
        seen += word in line


def killed(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture()
def three_class_task(learner, photos, tmp_path):
    root = tmp_path / "tasks"
    store = TaskStore(root, learner, "protonet-photos")
    support = {name: sorted((photos.support_dir / name).iterdir()) for name in ("flamingo", "laptop", "panda")}
    return root, store.create(support).id


def test_a_kill_in_the_middle_of_a_task_write_leaves_it_whole(three_class_task, learner, photos, monkeypatch):
    root, task_id = three_class_task
    process = writer(root, task_id, "stall", photos)
    try:
        wait_for(process, "WRITING")
    finally:
        killed(process)
    # the killed writer's version is half written: task.safetensors without its task.json
    current = Path(os.readlink(root / task_id)).name
    (partial,) = [v for v in (root / tasks_store.VERSIONS).iterdir() if v.name != current]
    assert (partial / "task.safetensors").exists() and not (partial / "task.json").exists()

    task = fs.load_task(root / task_id)  # the task is the one before the write, whole
    assert list(task.class_names) == ["flamingo", "laptop", "panda"]
    store = TaskStore(root, learner, "protonet-photos")  # a restarted server
    assert store.task(task_id).predict([photos.queries_dir / "panda_0020.jpg"]).class_names == ["panda"]
    grown = store.add_classes(task_id, {"pizza": sorted((photos.support_dir / "pizza").iterdir())})
    assert grown.classes[-1] == "pizza"  # the dead writer's lock held no one up

    monkeypatch.setattr(tasks_store, "ORPHAN_AGE_S", 0.0)
    store.collect_orphans()
    assert [v.name for v in (root / tasks_store.VERSIONS).iterdir()] == [Path(os.readlink(root / task_id)).name]
    assert list(fs.load_task(root / task_id).class_names) == ["flamingo", "laptop", "panda", "pizza"]


def test_a_writer_killed_at_a_random_moment_leaves_a_loadable_task(three_class_task, photos):
    root, task_id = three_class_task
    process = writer(root, task_id, "loop", photos)
    try:
        wait_for(process, "ADDED")
        time.sleep(random.uniform(0.0, 1.0))
    finally:
        killed(process)
    task = fs.load_task(root / task_id)
    assert list(task.class_names) in (["flamingo", "laptop", "panda"], ["flamingo", "laptop", "panda", "pizza"])
    assert task.predict([photos.queries_dir / "flamingo_0020.jpg"]).class_names == ["flamingo"]
