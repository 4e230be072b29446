"""Load test of ``fewshot serve`` on the loopback address: concurrent clients predicting against one task while
another client grows and shrinks it. Zero errors and zero wrong answers are required (exit status 1 otherwise).

The server runs in a process of its own (``fewshot serve`` on a free port over a temporary tasks folder);
``--clients`` threads each keep one connection and send one query photo per request, in turn, until
``--seconds`` have passed; meanwhile one more client adds the class ``pizza`` to the task and removes
it again, over and over. A query of a class that is always in the task must be answered with that class
whatever the writer is doing; the ``pizza`` query is only timed. Reported: client-side latency
percentiles and throughput, the server's own percentiles from ``/metrics``, and the writer's changes.

    OMP_NUM_THREADS=1 python benchmarks/speed/serve_load.py --clients 16 --seconds 60 \\
        --out benchmarks/results/serve_cpu.md

Bounded: at most 64 clients and 600 seconds, one address (127.0.0.1), and a timeout on every request.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "examples" / "photos"
STABLE = ("flamingo", "laptop", "panda", "starfish")  # always in the task
GROWING = "pizza"  # added and removed by the writer
HOST = "127.0.0.1"
MAX_CLIENTS = 64
MAX_SECONDS = 600
REQUEST_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def support_files(classes: tuple[str, ...]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        (name, (path.name, path.read_bytes(), "image/jpeg"))
        for name in classes
        for path in sorted((PHOTOS / "support" / name).iterdir())
    ]


def start_server(tasks: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-c", "from fewshot_sdk.cli.app import main; main()", "serve"]
    command += ["--tasks", str(tasks), "--host", HOST, "--port", str(port)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}: {server.stderr.read()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout} s")


class Tally:
    """What the clients saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.wrong: list[str] = []
        self.changes = 0
        self.change_errors: list[str] = []


def predictor(url: str, task_id: str, offset: int, deadline: float, tally: Tally) -> None:
    queries = [(name, (PHOTOS / "queries" / f"{name}_0020.jpg").read_bytes()) for name in (*STABLE, GROWING)]
    turn = offset
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            name, data = queries[turn % len(queries)]
            turn += 1
            start = time.perf_counter()
            try:
                response = client.post(
                    f"{url}/tasks/{task_id}/predict", files=[("images", (f"{name}.jpg", data, "image/jpeg"))]
                )
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            seconds = time.perf_counter() - start
            with tally.lock:
                if response.status_code != 200:
                    tally.errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                tally.latencies.append(seconds)
                answer = response.json()["class_names"][0]
                if name != GROWING and answer != name:
                    tally.wrong.append(f"{name} answered {answer}")


def writer(url: str, task_id: str, deadline: float, tally: Tally) -> None:
    """Adds the growing class and removes it again until the deadline."""
    files = support_files((GROWING,))
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            for response in (
                client.post(f"{url}/tasks/{task_id}/classes", files=files),
                client.post(f"{url}/tasks/{task_id}/classes/remove", json={"classes": [GROWING]}),
            ):
                with tally.lock:
                    if response.status_code == 200:
                        tally.changes += 1
                    else:
                        tally.change_errors.append(f"{response.status_code} {response.text[:200]}")


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def server_quantiles(metrics: str) -> dict[str, float]:
    wanted = 'fewshot_http_request_duration_seconds{route="/tasks/{task_id}/predict",method="POST",quantile="'
    found = {}
    for line in metrics.splitlines():
        if line.startswith(wanted):
            quantile, value = line[len(wanted) :].split('"}')
            found[quantile] = float(value)
    return found


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        model = platform.processor() or "unknown CPU"
    versions = []
    for dist in ("torch", "onnxruntime", "onnxruntime-gpu", "fastapi", "uvicorn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, {', '.join(versions)}; " + (
        f"OMP_NUM_THREADS={threads}"
    )


def background_jobs() -> str:
    """Other measurements running on the machine meanwhile (they share its cores)."""
    found = subprocess.run(["pgrep", "-af", "int8_export"], capture_output=True, text=True).stdout.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=None, help="write the results here (markdown)")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        raise SystemExit(f"--clients 1..{MAX_CLIENTS} and --seconds up to {MAX_SECONDS}")

    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        port = free_port()
        url = f"http://{HOST}:{port}"
        server = start_server(Path(scratch) / "tasks", port)
        try:
            wait_until_up(url, server)
            made = httpx.post(f"{url}/tasks", files=support_files(STABLE), timeout=REQUEST_TIMEOUT_S)
            made.raise_for_status()
            task_id = made.json()["id"]
            tally = Tally()
            start = time.monotonic()
            deadline = start + args.seconds
            threads = [
                threading.Thread(target=predictor, args=(url, task_id, i, deadline, tally)) for i in range(args.clients)
            ]
            threads.append(threading.Thread(target=writer, args=(url, task_id, deadline, tally)))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - start
            served = server_quantiles(httpx.get(f"{url}/metrics", timeout=REQUEST_TIMEOUT_S).text)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    ordered = sorted(tally.latencies)
    figures = {
        "predictions": len(ordered),
        "throughput": len(ordered) / elapsed,
        "p50": 1000 * percentile(ordered, 0.5),
        "p99": 1000 * percentile(ordered, 0.99),
        "errors": len(tally.errors) + len(tally.change_errors),
        "wrong": len(tally.wrong),
    }
    summary = (
        f"{args.clients} clients, {elapsed:.1f} s: {figures['predictions']} predictions, "
        f"{figures['throughput']:.1f}/s, p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms; "
        f"{tally.changes} class changes; {figures['errors']} errors, {figures['wrong']} wrong answers"
    )
    print(summary)
    for problem in (tally.errors + tally.change_errors + tally.wrong)[:10]:
        print("  ", problem)
    if args.out:
        write_results(args, elapsed, figures, served, tally)
    if figures["errors"] or figures["wrong"]:
        raise SystemExit(1)


def write_results(args, elapsed: float, figures: dict, served: dict[str, float], tally: Tally) -> None:
    jobs = background_jobs()
    shared = (
        f"\nWhile it ran, another measurement shared the machine's cores (`pgrep -af int8_export`: "
        f"`{jobs.splitlines()[0][:120]}`, one thread), so these figures are lower than a quiet machine's.\n"
        if jobs
        else "\nNo other measurement ran on the machine meanwhile (`pgrep -af int8_export` found none).\n"
    )
    server = ", ".join(f"p{float(q) * 100:g} {1000 * v:.1f} ms" for q, v in served.items())
    args.out.write_text(
        f"""# `fewshot serve` under load (CPU, loopback)

Machine: {machine()}.
{shared}
{args.clients} clients, each with one keep-alive connection, sent one photo per request to
`POST /tasks/{{id}}/predict` for {elapsed:.0f} s, against a task of {len(STABLE)} classes (5 photos each) of
`protonet-photos`, while one more client added the class `{GROWING}` (5 photos) and removed it again,
{tally.changes} changes in all. Server and clients ran on this machine (the server in its own process, one
uvicorn worker; the clients as threads of one Python process), so they shared its cores.

```
OMP_NUM_THREADS=1 python benchmarks/speed/serve_load.py --clients {args.clients} --seconds {args.seconds:g} \\
    --out benchmarks/results/serve_cpu.md
```

| figure | value |
| --- | --- |
| predictions answered | {figures["predictions"]} |
| throughput | {figures["throughput"]:.1f} predictions/s |
| latency p50 (client) | {figures["p50"]:.1f} ms |
| latency p99 (client) | {figures["p99"]:.1f} ms |
| latency (server, `/metrics`, last 4096) | {server or "n/a"} |
| errors (any non-200 or failed request) | {figures["errors"]} |
| wrong answers (a stable class's photo not answered with it) | {figures["wrong"]} |

Every client waits for its answer before sending again, so the latency is mostly the queue: {args.clients}
requests in flight at {figures["throughput"]:.1f}/s is {1000 * args.clients / figures["throughput"]:.0f} ms each
(Little's law), against the p50 above; one photo's preprocessing and prediction is a small part of it.
"""
    )


if __name__ == "__main__":
    main()
