"""benchmarks/gpu.sh: refuses at once without a GPU, and its driver's code paths run on the CPU (--cpu-check)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.sh"
REFUSAL = "error: no CUDA device: benchmarks/gpu.sh needs a GPU ("

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has a GPU: gpu.sh would run, not refuse"
)


def script_env(**extra: str) -> dict[str, str]:
    """This interpreter as the script's Python, and no $OUT unless given."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    return {**env, **extra}


def run_script(*args: str, env: dict[str, str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    return done, time.perf_counter() - start


@pytest.mark.parametrize("hidden", [None, ""], ids=["no-gpu", "CUDA_VISIBLE_DEVICES-empty"])
def test_refuses_fast_without_cuda(tmp_path, hidden):
    env = script_env(OUT=str(tmp_path / "out"))
    if hidden is not None:
        env["CUDA_VISIBLE_DEVICES"] = hidden
    before = sorted((REPO / "benchmarks" / "results").iterdir())
    done, seconds = run_script(env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(REFUSAL) and lines[0].endswith(")"), done.stderr
    assert seconds < 3, f"the refusal took {seconds:.1f} s"
    # refused before writing anything
    assert not (tmp_path / "out").exists()
    assert sorted((REPO / "benchmarks" / "results").iterdir()) == before


def test_cpu_check_runs_every_child_part(tmp_path):
    """Every part on the CPU with tiny sizes (the GPU-only branches say n/a; the kernel tests are only collected,
    training runs one episode), the table and $OUT: about 17 s here."""
    results, out = tmp_path / "results", tmp_path / "out"
    parts = "env,kernels,maml,photos,nccl,train,tests"
    done, _ = run_script(
        "--cpu-check", "--parts", parts, "--results", str(results), env=script_env(OUT=str(out)), timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = (results / "gpu_cpu-check.md").read_text()
    assert done.stdout.strip() == table.strip()
    assert (out / "gpu_cpu-check.md").read_text() == table
    assert {p.name for p in out.iterdir()} == {"gpu_cpu-check.md", "gpu_run_logs.txt", "gpu_run.json"}
    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]
    by_part = {part: [r for r in rows if r.startswith(f"| {part} |")] for part in parts.split(",")}
    assert len(by_part["kernels"]) == 12, table
    assert all("eager err" in r and "FAILED" not in r for r in by_part["kernels"]), table
    assert any("adapt, 5 steps" in r for r in by_part["maml"]), table
    assert any("images/s" in r for r in by_part["photos"]), table
    assert any("gloo" in r for r in by_part["nccl"]), table
    assert any("best validation accuracy" in r for r in by_part["train"]), table
    assert any("tests collected" in r for r in by_part["tests"]), table
    assert "FAILED" not in table and "skipped" not in table
