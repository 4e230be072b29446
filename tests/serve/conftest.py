"""The service's test fixtures: one photo learner for the session, apps over fresh task folders, real servers.

Skipped as a whole where the serve extra is missing (the README's test command installs it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -c constraints.txt -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (the test extra)")

import httpx

with warnings.catch_warnings():  # Starlette's test client announces a successor to httpx, not yet pinned here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "examples" / "photos"
SUPPORT = PHOTOS / "support"
QUERIES = PHOTOS / "queries"
CLASSES = sorted(p.name for p in SUPPORT.iterdir() if p.is_dir())


def photo_files(classes: list[str] | None = None) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The example support photos as multipart fields: one field per class, named after it."""
    return [
        (name, (path.name, path.read_bytes(), "image/jpeg"))
        for name in classes or CLASSES
        for path in sorted((SUPPORT / name).iterdir())
    ]


def query_files(*names: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Query photos (``panda_0020.jpg``, ...) as multipart fields."""
    return [("images", (name, (QUERIES / name).read_bytes(), "image/jpeg")) for name in names]


@pytest.fixture(scope="session")
def learner():
    import fewshot_sdk as fs

    return fs.load("protonet-photos")


@pytest.fixture()
def make_client(learner, tmp_path) -> Callable[..., TestClient]:
    """``make_client(**settings)``: a test client of a new app over ``tmp_path/tasks`` (or ``tasks=``)."""
    from fewshot_sdk.serve.app import create_app
    from fewshot_sdk.serve.settings import ServeSettings

    def make(**settings) -> TestClient:
        settings.setdefault("tasks", tmp_path / "tasks")
        return TestClient(create_app(ServeSettings(**settings), learner=learner))

    return make


@pytest.fixture()
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def shared(learner, tmp_path_factory):
    """One app and one task made from every example photo, for the tests that only read it."""
    from fewshot_sdk.serve.app import create_app
    from fewshot_sdk.serve.settings import ServeSettings

    root = tmp_path_factory.mktemp("shared") / "tasks"
    client = TestClient(create_app(ServeSettings(tasks=root), learner=learner))
    response = client.post("/tasks", files=photo_files())
    assert response.status_code == 201, response.text
    return client, response.json()["id"], root


def pick_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served(tasks: Path, *args: str, env: dict[str, str] | None = None, count: int = 1) -> Iterator[list[str]]:
    """``count`` processes of ``fewshot serve --tasks TASKS ARGS``, each on a free loopback port, started
    together; yields their URLs."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    processes, urls = [], []
    try:
        for _ in range(count):
            port = pick_port()
            command = [sys.executable, "-c", "from fewshot_sdk.cli.app import main; main()", "serve"]
            command += ["--tasks", str(tasks), "--port", str(port), *args]
            processes.append(
                subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_until_up(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {process.stdout.read()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 401):
                return
        time.sleep(0.2)
    raise AssertionError(f"the server at {url} did not answer within {timeout} s")


@pytest.fixture(scope="session")
def photos():
    """The example photos as multipart fields: ``photos.support(classes)``, ``photos.queries(*names)``."""

    class Photos:
        classes = CLASSES
        support_dir = SUPPORT
        queries_dir = QUERIES
        support = staticmethod(photo_files)
        queries = staticmethod(query_files)

    return Photos()


@pytest.fixture()
def free_port() -> int:
    """A loopback port no one listens on now."""
    return pick_port()


@pytest.fixture(scope="session")
def server():
    """``server(tasks, *args, env=None, count=1)``: ``fewshot serve`` in processes of its own (their URLs)."""
    return served
