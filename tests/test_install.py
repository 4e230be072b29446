"""Packaging: what a plain install pulls in, Triton only on demand, and a wheel that works on its own.

The wheel test builds the wheel, installs it with its dependencies into a new virtual environment
outside the checkout and runs the README's classify command there. It takes about a minute and
1.2 GB of temporary disk (torch again, from pip's cache), so it runs in CI (``CI`` set, as
``.ci/run`` is run) or with ``FEWSHOT_WHEEL_TEST=1``, and is skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "examples" / "photos"
GPU_ONLY = ("triton", "onnxruntime-gpu", "nvidia-")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_base_install_has_no_gpu_packages() -> None:
    project = _project()
    base = [_name(r) for r in project["dependencies"]]
    assert not [n for n in base if n.startswith(GPU_ONLY)], base
    assert "onnxruntime" in base
    extras = {k: [_name(r) for r in v] for k, v in project["optional-dependencies"].items()}
    assert {"triton", "onnxruntime-gpu"} <= set(extras["gpu"])
    assert "triton" in extras["test"], "the kernel tests run Triton's interpreter on CPU"


def test_constraints_pin_every_dependency() -> None:
    project = _project()
    names = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {_name(r) for r in extra}
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pinned[name.strip().lower()] = version.strip()
    assert names <= set(pinned), f"not pinned in constraints.txt: {sorted(names - set(pinned))}"
    assert pinned["torch"] == "2.13.0", "the CPU build on the build machines' disk"


def test_one_onnxruntime_distribution_installed() -> None:
    """onnxruntime and onnxruntime-gpu write the same files: with both, which one runs is an accident."""
    present = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            present.append(dist)
        except metadata.PackageNotFoundError:
            pass
    assert len(present) <= 1, (
        f"both {present} are installed; keep one: `pip uninstall -y onnxruntime onnxruntime-gpu` then "
        "`pip install -c constraints.txt onnxruntime` (CPU) or `... onnxruntime-gpu` (GPU)"
    )


def test_kernels_on_cpu_do_not_import_triton() -> None:
    """``backend="auto"`` on CPU tensors runs the torch reference and never imports Triton."""
    probe = (
        "import sys, torch\n"
        "from fewshot_sdk.kernels import pairwise_softmax, sgd_step, sgd_step_\n"
        "q = torch.randn(3, 4)\n"
        "pairwise_softmax(q, q, 'cosine'); sgd_step([q], [q], 0.1); sgd_step_([q.clone()], [q], 0.1)\n"
        "import fewshot_sdk.methods.protonet, fewshot_sdk.methods.inner_loop\n"
        "print(sorted(m for m in sys.modules if m == 'triton' or m.startswith('triton.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.skipif(
    not (os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("FEWSHOT_WHEEL_TEST") == "1"),
    reason="builds and installs the wheel into a new venv (about a minute, 1.2 GB): CI or FEWSHOT_WHEEL_TEST=1",
)
def test_wheel_installs_and_classifies_outside_checkout() -> None:
    with tempfile.TemporaryDirectory(prefix="fewshot-wheel-") as tmp:
        work = Path(tmp)
        # Build from a copy of what the build reads, so no build/ or egg-info lands in the checkout.
        src = work / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "fewshot_sdk", src / "fewshot_sdk", ignore=shutil.ignore_patterns("__pycache__"))
        pip = [sys.executable, "-m", "pip"]
        subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(src)], check=True)
        (wheel,) = (work / "dist").glob("fewshot_sdk-*.whl")
        print(f"wheel: {wheel.name}, {wheel.stat().st_size / 1e6:.1f} MB")

        models = REPO / "fewshot_sdk" / "models"
        bundled = {
            p.relative_to(REPO).as_posix()
            for pattern in ("zoo/*/*", "pretrained/*")
            for p in models.glob(pattern)
            if p.suffix in (".json", ".safetensors") or p.name == "NOTICE"
        }
        with zipfile.ZipFile(wheel) as zf:
            missing = bundled - set(zf.namelist())
        assert len(bundled) >= 20 and not missing, f"bundled models missing from the wheel: {sorted(missing)}"

        # A new venv, installed by this interpreter's pip (pip --python) so it shares pip's cache.
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [*pip, "--python", str(python), "install", "-q", "-c", str(REPO / "constraints.txt"), str(wheel)],
            check=True,
        )

        outside = work / "elsewhere"
        outside.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TRITON_INTERPRET")}
        where = subprocess.run(
            [str(python), "-c", "import fewshot_sdk; print(fewshot_sdk.__file__)"],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(where).is_relative_to(venv), where
        out = subprocess.run(
            [
                str(venv / "bin" / "fewshot"),
                "classify",
                "--support",
                str(PHOTOS / "support"),
                "--query",
                str(PHOTOS / "queries"),
            ],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        # One line a query, "<path>/flamingo_0020.jpg: flamingo (0.996)": each file's own class, confidently.
        answers = {}
        for line in out.stdout.strip().splitlines():
            m = re.fullmatch(r"(.+): (\S+) \(([01]\.\d+)\)", line)
            assert m, line
            answers[Path(m[1]).name] = (m[2], float(m[3]))
        queries = {p.name for p in (PHOTOS / "queries").iterdir() if p.is_file()}
        assert set(answers) == queries and len(queries) == 5, out.stdout
        for query, (label, prob) in answers.items():
            assert query.startswith(label + "_") and prob > 0.5, (query, label, prob)
