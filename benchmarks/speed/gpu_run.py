"""The GPU run of ``benchmarks/gpu.sh``: kernel tests, kernel timings with their roofline, MAML, photos, NCCL, training.

Started by ``benchmarks/gpu.sh`` (which refuses at once on a machine without a GPU); run alone it does the same:

    python benchmarks/speed/gpu_run.py              # on a CUDA machine: everything, within --budget seconds
    python benchmarks/speed/gpu_run.py --cpu-check  # on any machine: every part's code path, tiny sizes, no GPU

Each part runs in a child process of its own with a time limit (a hang or a crash costs that part's row, not the
run), and the parts share one budget (default 420 s, so the whole run ends inside 8 minutes); the GPU tests
come last and take what the others left, up to 240 s:

- ``env``: the device, versions, the datasheet peaks the floors use, and two ceilings measured here (a 1 GiB
  device-to-device copy, 8192^3 matrix products in bf16 and in strict fp32);
- ``kernels``: the fused pairwise scores + softmax (+ the read of values) and the fused SGD steps against the SDK's
  torch path (``backend="torch"``: torch eager) at few-shot sizes and at 10k x 1k x 512, each checked against a
  float64 reference first; CUDA-event timing, warm-up (which autotunes), median, the L2 flushed before every timed
  call; floor = max(FLOPs / peak, bytes / bandwidth) from the datasheet peaks;
- ``maml``: ``fs.load("maml-omniglot")``, ``learner.adapt(support, steps=5)`` on 5 x 1 glyphs, ``predict`` of 75
  queries; and the adapted task network's forward captured in a CUDA graph by this script (the SDK does not
  capture graphs itself) against its eager forward;
- ``photos``: ``fs.load("protonet-photos")``'s embedding of random 64-image batches at its input size, images/s;
- ``nccl``: a one-rank NCCL process group through the SDK's ``join_process_group``: all_reduce and broadcast of
  a Conv4-sized gradient, checked and timed (collectives between ranks need 2 GPUs);
- ``train``: ``fewshot train --method protonet ... --episodes 20 --nproc-per-node 1 --device cuda`` on Omniglot's
  minimal background zips (found in $FEWSHOT_OMNIGLOT, shared/, ../shared/ or .gpu-carry/);
- ``tests``: ``pytest tests/kernels`` on the GPU, TRITON_INTERPRET removed from its environment (tests/conftest.py
  sets it only where CUDA is absent); its log goes to $OUT.

It prints one Markdown table and writes it to ``benchmarks/results/gpu_<device>.md`` and, where $OUT is set, to
$OUT with ``gpu_run_logs.txt`` (every part's output) and ``gpu_run.json`` (3 files: the device tool brings back 8).
``--cpu-check`` runs the same code on the CPU with tiny sizes and writes ``gpu_cpu-check.md`` to ``--results``
(default: a new temporary folder), never to benchmarks/results; the CUDA-only branches (events, graphs, NCCL, the
GPU tests) say n/a there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: Seconds for the whole run (the brief: inside 8 minutes) and each part's own ceiling.
BUDGET_S = 420.0
PART_LIMIT_S = {"env": 60, "kernels": 120, "maml": 50, "photos": 50, "nccl": 40, "train": 110, "tests": 240}
PARTS = tuple(PART_LIMIT_S)
#: Below this many seconds left a part is skipped rather than started.
MIN_PART_S = 15.0

MINIMAL_OMNIGLOT = ("images_background_small1.zip", "images_background_small2.zip", "all_runs.zip")
N_WAY, QUERIES, STEPS = 5, 15, 5
PHOTO_BATCH = 64
TRAIN_EPISODES = 20


# --------------------------------------------------------------------------------------------- peaks
@dataclass(frozen=True)
class Peak:
    """Datasheet peaks: dense FLOP/s (fp32 without tensor cores, tf32 and bf16 tensor cores), HBM bytes/s."""

    name: str
    fp32: float
    tf32: float
    bf16: float
    bandwidth: float
    source: str


_H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet (dense, i.e. without sparsity)"
_H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet (dense; compute as H100 SXM)"
#: Matched in order by substring of torch.cuda.get_device_name(); the first match wins.
GPU_PEAKS: tuple[tuple[str, Peak], ...] = (
    ("H200 NVL", Peak("H200 NVL", 60e12, 418e12, 835e12, 4.8e12, _H200_SHEET)),
    ("H200", Peak("H200 SXM", 67e12, 494.7e12, 989.4e12, 4.8e12, _H200_SHEET)),
    ("H100 NVL", Peak("H100 NVL", 60e12, 418e12, 835e12, 3.9e12, _H100_SHEET)),
    ("H100 PCIe", Peak("H100 PCIe", 51e12, 378e12, 756e12, 2.0e12, _H100_SHEET)),
    ("H100", Peak("H100 SXM", 67e12, 494.7e12, 989.4e12, 3.35e12, _H100_SHEET)),
    ("A100-SXM4-80GB", Peak("A100 SXM 80GB", 19.5e12, 156e12, 312e12, 2.039e12, "NVIDIA A100 datasheet")),
    ("A100", Peak("A100 40GB", 19.5e12, 156e12, 312e12, 1.555e12, "NVIDIA A100 datasheet")),
    ("L40S", Peak("L40S", 91.6e12, 183e12, 362e12, 0.864e12, "NVIDIA L40S datasheet")),
    ("L4", Peak("L4", 30.3e12, 60e12, 121e12, 0.3e12, "NVIDIA L4 datasheet")),
)


def gpu_peak(name: str) -> Peak | None:
    return next((peak for key, peak in GPU_PEAKS if key in name), None)


# --------------------------------------------------------------------------------------------- formatting
def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.1f} s"


def row(
    part: str, case: str, sdk: str = "", eager: str = "", speedup: str = "", floor: str = "", notes: str = ""
) -> dict:
    return {"part": part, "case": case, "sdk": sdk, "eager": eager, "speedup": speedup, "floor": floor, "notes": notes}


def ratio(slow: float | None, fast: float | None) -> str:
    return f"{slow / fast:.2f}x" if slow and fast else ""


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------------- timing (children)
class Timer:
    """Median seconds of a call after warm-up: CUDA events on a GPU (the L2 flushed before each timed call,
    outside the events, as triton's do_bench does), ``perf_counter`` on the CPU."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        # larger than any L2 so far (H100/H200: 50/60 MB): a flush makes every timed call read from HBM
        self.flush = torch.empty(256 << 20, dtype=torch.int8, device=device) if self.cuda else None

    def __call__(self, fn: Callable[[], object], warmup: int = 5, reps: int = 30, flush: bool = True) -> float:
        torch = self.torch
        for _ in range(warmup):
            fn()
        samples = []
        if self.cuda:
            torch.cuda.synchronize()
            for _ in range(reps):
                if flush:
                    self.flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
        else:
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
        return statistics.median(samples)


#: Where a child part writes its result (``--json``); parts with many rows write it after each one.
_RESULT_PATH: Path | None = None


def save_partial(result: dict) -> None:
    if _RESULT_PATH is not None:
        _RESULT_PATH.write_text(json.dumps(result))


def rel_err(actual: Any, expected: Any) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def device_and_peak(cpu: bool) -> tuple[Any, Peak | None]:
    import torch

    if cpu:
        return torch.device("cpu"), None
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    return torch.device("cuda"), gpu_peak(torch.cuda.get_device_name())


def floor_cell(flops: float, nbytes: float, flop_rate: float | None, peak: Peak | None) -> tuple[float | None, str]:
    if peak is None or flop_rate is None:
        return None, "n/a (no datasheet peaks for this device)"
    compute, memory = flops / flop_rate, nbytes / peak.bandwidth
    bound = "compute" if compute > memory else "memory"
    return max(compute, memory), f"{fmt_time(max(compute, memory))} ({bound})"


# --------------------------------------------------------------------------------------------- part: env
def part_env(cpu: bool) -> dict:
    import torch

    meta: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = "not installed"
    device, peak = device_and_peak(cpu)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(
            device=torch.cuda.get_device_name(),
            capability=f"{props.major}.{props.minor}",
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"]
            meta["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            meta["nvidia_smi"] = f"n/a ({exc})"
    else:
        meta["device"] = "CPU (--cpu-check)"
    if peak is not None:
        meta["peak"] = peak.__dict__
    # Measured ceilings (METHOD.md: datasheet rates are leads).
    timer = Timer(device)
    size = (1 << 30) if device.type == "cuda" else (16 << 20)
    src = torch.randn(size // 4, device=device)
    dst = torch.empty_like(src)
    copy_s = timer(lambda: dst.copy_(src), warmup=3, reps=10, flush=False)
    meta["copy_tb_s"] = 2 * size / copy_s / 1e12
    n = 8192 if device.type == "cuda" else 256
    for dtype, key in ((torch.bfloat16, "bf16_tflops"), (torch.float32, "fp32_tflops")):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # strict fp32: the rate the ieee fp32 kernels can use
        try:
            meta[key] = 2 * n**3 / timer(lambda a=a, b=b: a @ b, warmup=3, reps=10, flush=False) / 1e12
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    return {"meta": meta, "rows": []}


# --------------------------------------------------------------------------------------------- part: kernels


def pairwise_cases(cpu: bool) -> list[tuple[int, int, int, str, int, str]]:
    """(M, N, D, metric, V (0: softmax only), dtype): queries x supports x features."""
    big = (200, 100, 64) if cpu else (10_000, 1_000, 512)
    cases = [
        (75, 5, 64, "sqeuclidean", 0, "float32"),  # ProtoNet Omniglot 5-way, 15 queries, Conv4 embedding
        (75, 5, 64, "sqeuclidean", 5, "float32"),  # ... with the read of one-hot labels
        (100, 500, 1600, "sqeuclidean", 0, "float32"),  # a 100-class x 5-shot support, Conv4 84x84 embedding
        (100, 500, 1600, "cosine", 100, "float32"),  # Matching networks' attention read over 100 classes
        (100, 500, 1600, "l1", 0, "float32"),  # weighted L1 (Siamese-style)
        (*big, "sqeuclidean", 0, "float32"),
        (*big, "sqeuclidean", 64, "float32"),
        (*big, "cosine", 64, "bfloat16"),
    ]
    if cpu:  # the interpreter is not timed; keep the CPU check short
        cases = [c if c[0] != 100 else (20, 50, 64, *c[3:]) for c in cases]
    return cases


def part_kernels(cpu: bool) -> dict:
    import torch
    from kernels import conv4_shapes, resnet12_shapes  # the CPU kernel benchmark's shapes

    from fewshot_sdk.kernels import pairwise_softmax, reference, sgd_step, sgd_step_

    device, peak = device_and_peak(cpu)
    timer = Timer(device)
    cuda = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    rows: list[dict] = []
    failures: list[str] = []
    reps, warm = (3, 1) if cpu else (50, 5)
    resnet12 = resnet12_shapes()[:6] if cpu else resnet12_shapes()  # CPU: its first block only

    def add(done: dict) -> None:  # each row saved as it comes: a part that runs out of time keeps its rows
        rows.append(done)
        save_partial({"rows": rows, "failed": failures})

    def checked_and_timed(
        label: str,
        call: Any,
        triton_err: Any,
        tolerance: float,
        floor_s: Any,
        floor_text: str,
        notes: list,
        err_at: int,
    ) -> None:
        """One row: Triton checked against float64 (``triton_err()``) and timed where CUDA runs it, then eager timed."""
        triton_s = None
        if cuda:
            err = triton_err()
            notes.insert(err_at, f"Triton err {err:.1e}")
            if not err < tolerance:  # NaN fails too
                failures.append(f"{label}: Triton relative error {err:.3g}")
                notes.insert(0, "WRONG RESULT")
            triton_s = timer(lambda: call("triton"), warmup=warm, reps=reps)
            if floor_s:
                notes.insert(0, f"Triton at {100 * floor_s / triton_s:.0f}% of floor")
        eager_s = timer(lambda: call("torch"), warmup=warm, reps=reps)
        cells = (fmt_time(triton_s) if cuda else "n/a (CPU)", fmt_time(eager_s), ratio(eager_s, triton_s))
        add(row("kernels", label, *cells, floor_text, "; ".join(notes)))

    for m, n, d, metric, v, dtype_name in pairwise_cases(cpu):
        dtype = getattr(torch, dtype_name)
        q = (torch.randn(m, d, device=device, generator=gen) / d**0.5).to(dtype)
        s = (torch.randn(n, d, device=device, generator=gen) / d**0.5).to(dtype)
        values = torch.randn(n, v, device=device, generator=gen).to(dtype) if v else None
        weights = torch.rand(d, device=device, generator=gen).to(dtype) + 0.5 if metric == "l1" else None
        temp = 0.5 if metric != "cosine" else 0.1
        size = dtype.itemsize
        per_pair = 3 * d if metric == "l1" else 2 * d
        flops = m * n * (per_pair + 5 + 2 * v)
        nbytes = size * (m * d + n * d + n * v + (m * v if v else m * n) + (d if weights is not None else 0))
        # ieee fp32 dots run on the FMA units; bf16 dots on the tensor cores
        rate = None if peak is None else (peak.bf16 if dtype == torch.bfloat16 else peak.fp32)
        floor_s, floor_text = floor_cell(flops, nbytes, rate, peak)

        def call(backend: str, q=q, s=s, values=values, weights=weights, metric=metric, temp=temp) -> Any:
            return pairwise_softmax(q, s, metric, values, temp, weights, backend=backend)

        expected = reference.pairwise_softmax(
            q.double(),
            s.double(),
            metric,
            None if values is None else values.double(),
            temp,
            None if weights is None else weights.double(),
        )
        op = "softmax@values" if v else "softmax"
        shape = f"{m}x{n}x{d}" + (f", V={v}" if v else "") + ("" if dtype == torch.float32 else f", {dtype_name}")
        # correct first (against float64), then timed
        notes = [f"eager err {rel_err(call('torch'), expected):.1e}"]
        tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
        checked_and_timed(
            f"pairwise {op} {metric} {shape}",
            call,
            lambda call=call, expected=expected: rel_err(call("triton"), expected),
            tolerance,
            floor_s,
            floor_text,
            notes,
            err_at=0,
        )

    sgd_cases = [
        ("sgd_step_ Conv4", conv4_shapes(), "float", False),
        ("sgd_step_ ResNet-12", resnet12, "float", False),
        ("sgd_step_ ResNet-12, per-parameter lr (Meta-SGD)", resnet12, "tensors", False),
        ("sgd_step Conv4, differentiable (MAML inner step)", conv4_shapes(), "float", True),
    ]
    if not cpu:
        sgd_cases.insert(2, ("sgd_step_ 1 x 64M", [(64 << 20,)], "float", False))
    for name, shapes, lr_kind, differentiable in sgd_cases:
        params = [torch.randn(shape, device=device, generator=gen) for shape in shapes]
        grads = [torch.randn(shape, device=device, generator=gen) for shape in shapes]
        lr: Any = 0.01 if lr_kind == "float" else [torch.rand(shape, device=device, generator=gen) for shape in shapes]
        count = sum(p.numel() for p in params)
        nbytes = 4 * count * (4 if lr_kind == "tensors" else 3)  # read p, g (and lr), write p
        floor_s, floor_text = floor_cell(2 * count, nbytes, None if peak is None else peak.fp32, peak)
        if differentiable:
            for p in params:
                p.requires_grad_(True)

            def call(backend: str, params=params, grads=grads, lr=lr) -> Any:
                return sgd_step(params, grads, lr, backend=backend)

            expected = reference.sgd_step([p.detach().double() for p in params], [g.double() for g in grads], 0.01)
            check = call
        else:

            def call(backend: str, params=params, grads=grads, lr=lr) -> Any:
                sgd_step_(params, grads, lr, backend=backend)

            def check(backend: str, params=params, grads=grads, lr=lr) -> list:
                copies = [p.clone() for p in params]
                sgd_step_(copies, grads, lr, backend=backend)
                return copies

            rates = 0.01 if lr_kind == "float" else [r.double() for r in lr]
            expected = reference.sgd_step([p.double() for p in params], [g.double() for g in grads], rates)

        def err_of(outputs: list, expected=expected) -> float:
            return rel_err(torch.cat([o.flatten() for o in outputs]), torch.cat([e.flatten() for e in expected]))

        # correct first (the in-place variants on copies), then timed (which moves the params)
        notes = [f"{len(shapes)} tensors, {count / 1e6:.2f}M params", f"eager err {err_of(check('torch')):.1e}"]
        checked_and_timed(
            name,
            call,
            lambda check=check, err_of=err_of: err_of(check("triton")),
            1e-6,
            floor_s,
            floor_text,
            notes,
            err_at=1,
        )
    return {"rows": rows, "failed": failures}


# --------------------------------------------------------------------------------------------- part: maml
def find_omniglot() -> Path | None:
    """A folder with Omniglot's background zips: $FEWSHOT_OMNIGLOT, then shared/, ../shared/, .gpu-carry/."""
    candidates = [os.environ.get("FEWSHOT_OMNIGLOT")]
    candidates += [str(REPO / "shared/data/omniglot"), str(REPO.parent / "shared/data/omniglot")]
    candidates += [str(REPO / ".gpu-carry/omniglot")]
    for candidate in candidates:
        if candidate and (Path(candidate) / MINIMAL_OMNIGLOT[0]).is_file():
            return Path(candidate)
    return None


def part_maml(cpu: bool) -> dict:
    import torch

    import fewshot_sdk as fs

    device, _ = device_and_peak(cpu)
    timer = Timer(device)
    learner = fs.load("maml-omniglot", device=str(device))
    data = find_omniglot()
    if data is not None:
        from fewshot_sdk.data.episodes import EpisodeSampler
        from fewshot_sdk.data.omniglot import load_background_characters

        characters = load_background_characters(data / MINIMAL_OMNIGLOT[0], learner.preprocessor)
        episode = EpisodeSampler(characters, N_WAY, 1, QUERIES, seed=0).sample()
        support_x, support_y, query_x = episode.support_x, episode.support_y, episode.query_x
        source = f"5 x 1 Omniglot glyphs ({data.name}/{MINIMAL_OMNIGLOT[0]}), {N_WAY * QUERIES} queries"
    else:
        gen = torch.Generator().manual_seed(0)
        support_x = torch.rand(N_WAY, 1, 28, 28, generator=gen)
        support_y = torch.arange(N_WAY)
        query_x = torch.rand(N_WAY * QUERIES, 1, 28, 28, generator=gen)
        source = "no Omniglot data found: random 28x28 images"
    support = fs.SupportSet.from_tensors(support_x, support_y)
    reps, warm = (1, 0) if cpu else (30, 2)

    def adapt() -> Any:
        return learner.adapt(support, steps=STEPS)

    task = adapt()
    probs = task.predict(query_x).probs
    accuracy = ""
    if data is not None:
        accuracy = f"; accuracy {float((probs.argmax(1) == episode.query_y).float().mean()):.2f}"
    adapt_s = timer(adapt, warmup=warm, reps=reps, flush=False)
    predict_s = timer(lambda: task.predict(query_x), warmup=warm, reps=reps, flush=False)
    both_s = timer(lambda: adapt().predict(query_x), warmup=warm, reps=reps, flush=False)
    rows = [
        row("maml", f"adapt, {STEPS} steps, 5-way 1-shot", fmt_time(adapt_s), notes=source + accuracy),
        row(
            "maml",
            f"predict {N_WAY * QUERIES} queries (task.predict)",
            fmt_time(predict_s),
            notes="host tensors in and out, as users call it",
        ),
        row("maml", "adapt + predict, per task, no CUDA graph", fmt_time(both_s)),
    ]
    network = task.network
    static_x = query_x.to(device)
    with torch.no_grad():
        eager_s = timer(lambda: network(static_x), warmup=warm, reps=reps, flush=False)
    if device.type != "cuda":
        rows.append(row("maml", "task network forward: CUDA graph replay", "n/a (CPU)", fmt_time(eager_s)))
        return {"rows": rows}
    # The SDK does not capture graphs: this captures the adapted task network's forward around it.
    try:

        def capture(net: Any = network) -> tuple[Any, Any]:
            graph = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.no_grad(), torch.cuda.stream(side):
                for _ in range(3):
                    net(static_x)
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad(), torch.cuda.graph(graph):
                outputs = net(static_x)
            return graph, outputs

        graph, outputs = capture()
        graph.replay()
        torch.cuda.synchronize()
        with torch.no_grad():
            err = rel_err(outputs[1], network(static_x)[1])
        if not err < 1e-5:
            raise AssertionError(f"graph replay differs from the eager forward: relative error {err:.3g}")
        replay_s = timer(graph.replay, warmup=3, reps=reps, flush=False)
        capture_s = timer(lambda: capture(), warmup=1, reps=5, flush=False)

        def per_task() -> Any:
            fresh, _ = capture(adapt().network)
            fresh.replay()

        per_task_s = timer(per_task, warmup=1, reps=min(reps, 10), flush=False)
        rows += [
            row(
                "maml",
                f"task network forward, {N_WAY * QUERIES} queries: CUDA graph replay vs eager",
                fmt_time(replay_s),
                fmt_time(eager_s),
                ratio(eager_s, replay_s),
                notes=f"graph captured by this script around task.network (the SDK captures none); err {err:.1e}",
            ),
            row(
                "maml",
                "adapt + capture + replay, per task",
                fmt_time(per_task_s),
                fmt_time(both_s),
                ratio(both_s, per_task_s),
                notes=f"a new task's weights need a new capture: {fmt_time(capture_s)} each",
            ),
        ]
    except Exception as exc:  # capture is this script's experiment, not an SDK feature: report, don't fail
        rows.append(
            row(
                "maml",
                "task network forward: CUDA graph",
                "capture failed",
                fmt_time(eager_s),
                notes=f"{type(exc).__name__}: {exc}"[:300],
            )
        )
    return {"rows": rows}


# --------------------------------------------------------------------------------------------- part: photos
def conv_flops(module: Any, x: Any) -> float:
    """FLOPs of one forward: 2 x multiply-adds of every convolution and linear layer (hooks on the modules)."""
    import torch
    from torch import nn

    total = [0.0]

    def hook(layer: Any, _inputs: Any, output: Any) -> None:
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total[0] += 2 * output.numel() * (layer.in_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.Linear):
            total[0] += 2 * output.numel() * layer.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def part_photos(cpu: bool) -> dict:
    import torch

    import fewshot_sdk as fs

    device, peak = device_and_peak(cpu)
    timer = Timer(device)
    learner = fs.load("protonet-photos", device=str(device))
    twin = learner.inference_learner()  # what adapt and predict embed with (batch norm folded)
    size = learner.preprocessor.config.image_size
    batch = 2 if cpu else PHOTO_BATCH
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, *size, device=device, generator=gen)
    per_image = conv_flops(learner.backbone, x[:1])

    def embed() -> Any:
        with torch.no_grad():
            return twin.embed(x)

    seconds = timer(embed, warmup=3, reps=3 if cpu else 20, flush=False)
    rate = per_image * batch / seconds
    notes = f"{per_image / 1e9:.2f} GFLOP/image (convolutions + linear), {rate / 1e12:.2f} TFLOP/s"
    tf32 = torch.backends.cudnn.allow_tf32 if device.type == "cuda" else False
    if peak is not None:
        notes += f" = {100 * rate / (peak.tf32 if tf32 else peak.fp32):.1f}% of {'tf32' if tf32 else 'fp32'} peak"
    return {
        "rows": [
            row(
                "photos",
                f"protonet-photos embed, batch {batch} x {size[0]}x{size[1]}, fp32",
                f"{batch / seconds:,.0f} images/s",
                notes=f"{fmt_time(seconds)} per batch; {notes}",
            )
        ]
    }


# --------------------------------------------------------------------------------------------- part: nccl
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def part_nccl(cpu: bool) -> dict:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    import torch
    import torch.distributed as dist
    from kernels import conv4_shapes  # the CPU kernel benchmark's shapes

    from fewshot_sdk.train.distributed import join_process_group

    device, _ = device_and_peak(cpu)
    backend = "gloo" if cpu else "nccl"
    if device.type == "cuda":
        torch.cuda.set_device(0)
    start = time.perf_counter()
    join_process_group(backend)
    try:
        count = sum(torch.Size(shape).numel() for shape in conv4_shapes())
        grads = torch.full((count,), 1.5, device=device)
        dist.all_reduce(grads, op=dist.ReduceOp.SUM)
        dist.broadcast(grads, src=0)
        dist.barrier()
        if not bool((grads == 1.5).all()):
            raise AssertionError("all_reduce over one rank changed the values")
        init_s = time.perf_counter() - start
        seconds = Timer(device)(lambda: dist.all_reduce(grads), warmup=5, reps=10 if cpu else 50, flush=False)
    finally:
        dist.destroy_process_group()
    return {
        "rows": [
            row(
                "nccl",
                f"1-rank {backend} group: all_reduce of a Conv4 gradient ({count:,} floats)",
                fmt_time(seconds),
                notes=f"group up and first collectives in {init_s:.1f} s; values checked; the SDK's gradient "
                "all_reduce between ranks needs 2 GPUs (fewshot train --nproc-per-node 1 forms no group)",
            )
        ]
    }


CHILD_PARTS: dict[str, Callable[[bool], dict]] = {
    "env": part_env,
    "kernels": part_kernels,
    "maml": part_maml,
    "photos": part_photos,
    "nccl": part_nccl,
}


# --------------------------------------------------------------------------------------------- parent
@dataclass
class Outcome:
    rc: int | None  # None: timed out
    seconds: float
    output: str


def run_limited(cmd: list[str], timeout: float, env: dict[str, str], log: Path | None = None) -> Outcome:
    """Run ``cmd`` in a new process group; on timeout kill the group. Output goes to ``log`` (and is returned)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        sink.seek(0)
        output = sink.read()
    if log is not None:
        log.write_text(output)
    return Outcome(rc, time.perf_counter() - start, output)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def child_env(cpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if cpu:  # a code-path check: one thread, so a machine busy with other jobs does not make it spin
        env["OMP_NUM_THREADS"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)  # the GPU run compiles the kernels; the interpreter is for CPU tests
    return env


def run_child(name: str, cpu: bool, timeout: float, logs: Path) -> tuple[dict, str | None]:
    """A part in its own process: (its JSON, None), or (the rows it saved before failing, why it failed)."""
    result = logs / f"part_{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--json", str(result)]
    outcome = run_limited(cmd + (["--cpu-check"] if cpu else []), timeout, child_env(cpu), logs / f"part_{name}.log")
    saved = json.loads(result.read_text()) if result.is_file() else {}
    if outcome.rc is None:
        why = (
            f"timed out after {outcome.seconds:.0f} s (limit {timeout:.0f} s); last output: {last_line(outcome.output)}"
        )
        return saved, why
    if outcome.rc != 0 or not result.is_file():
        return saved, f"exit {outcome.rc}: {last_line(outcome.output)}"
    return saved, None


def tests_part(cpu: bool, timeout: float, logs: Path) -> tuple[list[dict], bool]:
    cmd = [sys.executable, "-m", "pytest", "tests/kernels", "-v", "-p", "no:cacheprovider"]
    env = child_env(cpu)
    if cpu:  # no GPU to run them on: collect them under the interpreter, as CPU CI does
        env["TRITON_INTERPRET"] = "1"
        cmd.append("--collect-only")
    outcome = run_limited(cmd, timeout, env, logs / "pytest_kernels.log")
    # pytest's last line: "===== 120 passed, 2 skipped in 80.12s =====" (counts elsewhere could be test output)
    final = [line for line in outcome.output.splitlines() if re.match(r"^=+ .* in [\d.]+s", line)]
    counts = final[-1].strip("= ") if final else ""
    if outcome.rc is None:
        passed, failed = outcome.output.count(" PASSED"), outcome.output.count(" FAILED")
        counts = f"timed out after {outcome.seconds:.0f} s: {passed} passed, {failed} failed so far"
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", outcome.output, flags=re.MULTILINE)
    notes = "collected only (CPU check)" if cpu else "TRITON_INTERPRET unset: compiled kernels on the GPU"
    if failures:
        notes += "; failed: " + ", ".join(failures[:6]) + (" ..." if len(failures) > 6 else "")
    status = "ok" if outcome.rc == 0 else ("timed out" if outcome.rc is None else f"FAILED (exit {outcome.rc})")
    case = "pytest tests/kernels" + (" --collect-only" if cpu else "")
    return [row("tests", case, f"{status}: {counts or last_line(outcome.output)}", notes=notes)], outcome.rc == 0


def train_part(cpu: bool, timeout: float, logs: Path) -> tuple[list[dict], bool]:
    data = find_omniglot()
    if data is None:
        return [
            row("train", "fewshot train", "skipped", notes="no Omniglot data (shared/, ../shared/, .gpu-carry/)")
        ], False
    with tempfile.TemporaryDirectory(prefix="fewshot-gpu-train-") as tmp:
        minimal = Path(tmp) / "omniglot"
        minimal.mkdir()
        for name in MINIMAL_OMNIGLOT:  # the minimal background zips only: the fast protocol (tests/conftest.py)
            if (data / name).is_file():
                (minimal / name).symlink_to((data / name).resolve())
        episodes = 1 if cpu else TRAIN_EPISODES
        options = ["--method", "protonet", "--data", str(minimal), "--out", str(Path(tmp) / "ckpt")]
        options += ["--episodes", str(episodes), "--nproc-per-node", "1", "--device", "cpu" if cpu else "cuda"]
        if cpu:
            options += ["--val-episodes", "1"]
        cmd = [sys.executable, "-c", "from fewshot_sdk.cli.app import main; main()", "train", *options]
        outcome = run_limited(cmd, timeout, child_env(cpu), logs / "train.log")
    best = re.search(r"best validation accuracy ([0-9.]+) at episode (\d+)", outcome.output)
    ok = outcome.rc == 0 and best is not None
    shown = "fewshot train " + " ".join(options).replace(str(minimal), "<omniglot minimal>").replace(
        str(Path(tmp) / "ckpt"), "$TMP"
    )
    if ok:
        result = f"ok in {outcome.seconds:.1f} s"
        notes = f"best validation accuracy {best.group(1)} at episode {best.group(2)}; data {data}"
    else:
        status = "timed out" if outcome.rc is None else f"FAILED (exit {outcome.rc})"
        result, notes = f"{status} after {outcome.seconds:.1f} s", last_line(outcome.output)
    return [row("train", cell(shown), result, notes=notes + "; one process: no process group (see nccl)")], ok


def header(meta: dict, cpu: bool, wall: float) -> list[str]:
    env = meta.get("env", {})
    lines = [f"## benchmarks/gpu.sh on {env.get('device', 'CPU (--cpu-check)' if cpu else 'unknown device')}", ""]
    facts = [f"torch {env.get('torch', '?')}", f"triton {env.get('triton', '?')}", f"Python {env.get('python', '?')}"]
    if "capability" in env:
        facts += [
            f"CUDA {env.get('cuda')}",
            f"sm_{env['capability'].replace('.', '')}",
            f"{env.get('sms')} SMs",
            f"{env.get('memory_gib')} GiB",
            f"nvidia-smi (driver, max SM clock, power limit): {env.get('nvidia_smi')}",
        ]
    lines.append(", ".join(facts) + f". Whole run {wall:.0f} s ({time.strftime('%Y-%m-%d %H:%M %Z')}).")
    peak = env.get("peak")
    if peak:
        lines.append(
            f"Floors use the {peak['name']} datasheet peaks ({peak['source']}): {peak['fp32'] / 1e12:g} TFLOP/s fp32 "
            f"(no tensor cores: the kernels' fp32 dots are input_precision='ieee'), {peak['tf32'] / 1e12:g} tf32, "
            f"{peak['bf16'] / 1e12:g} bf16, {peak['bandwidth'] / 1e12:g} TB/s HBM; floor = max(FLOPs / peak, bytes / "
            "bandwidth), bytes = each input read once and each output written once."
        )
    elif not cpu:
        lines.append("No datasheet peaks known for this device: floors n/a.")
    if "copy_tb_s" in env:
        lines.append(
            f"Measured here: device-to-device copy {env['copy_tb_s']:.2f} TB/s (read + write), 8192^3 matrix product "
            f"{env['bf16_tflops']:.0f} TFLOP/s bf16 and {env['fp32_tflops']:.1f} TFLOP/s strict fp32 (torch)."
            if not cpu
            else "CPU check: tiny sizes, perf_counter timing; the numbers mean nothing, the code paths ran."
        )
    lines.append(
        "Timing: warm-up (Triton autotunes there), then the median of CUDA-event-timed calls with the L2 flushed "
        "before each (kernels); MAML, photos and NCCL without the flush. 'torch eager' is the SDK's "
        "backend='torch' path (torch ops, foreach for SGD); 'SDK / Triton' is backend='triton' or the SDK call named."
    )
    return [*lines, ""]


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| part | case | SDK / Triton | torch eager | speed-up | roofline floor | notes |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    keys = ("part", "case", "sdk", "eager", "speedup", "floor", "notes")
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return lines


def parent(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    deadline = started + args.budget
    out_env = os.environ.get("OUT")
    if args.cpu_check:
        results = Path(args.results) if args.results else Path(tempfile.mkdtemp(prefix="fewshot-gpu-check-"))
    else:
        results = Path(args.results) if args.results else REPO / "benchmarks/results"
    results.mkdir(parents=True, exist_ok=True)
    # $OUT brings back 8 files at most: the logs are gathered into one file there at the end
    logs = results / "logs" if args.cpu_check else Path(tempfile.mkdtemp(prefix="fewshot-gpu-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in PARTS if p in args.parts.split(",")] if args.parts else list(PARTS)
    rows: list[dict] = []
    meta: dict[str, Any] = {}
    ok = True
    for name in wanted:
        left = deadline - time.perf_counter()
        limit = min(PART_LIMIT_S[name], left)
        if limit < MIN_PART_S:
            rows.append(row(name, name, "skipped", notes=f"out of time ({left:.0f} s of the {args.budget:.0f} s left)"))
            ok = False
            continue
        print(f"[gpu.sh] {name} (up to {limit:.0f} s) ...", file=sys.stderr, flush=True)
        part_start = time.perf_counter()
        if name == "tests":
            part_rows, part_ok = tests_part(args.cpu_check, limit, logs)
        elif name == "train":
            part_rows, part_ok = train_part(args.cpu_check, limit, logs)
        else:
            result, error = run_child(name, args.cpu_check, limit, logs)
            if result.get("failed"):
                error = "; ".join(result["failed"])
            part_ok = error is None
            part_rows = result.get("rows", [])
            if error is not None:  # the rows a part made stay; the failure gets a row of its own
                part_rows.append(row(name, name, "FAILED", notes=error))
            if "meta" in result:
                meta[name] = result["meta"]
        print(
            f"[gpu.sh] {name}: {'ok' if part_ok else 'FAILED'} in {time.perf_counter() - part_start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        rows += part_rows
        ok = ok and part_ok
    text = "\n".join([*header(meta, args.cpu_check, time.perf_counter() - started), *table(rows)]) + "\n"
    device = "cpu-check" if args.cpu_check else meta.get("env", {}).get("device", "unknown")
    name = "gpu_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", device).strip("_") or "unknown") + ".md"
    targets = [results / name]
    if out_env:
        out = Path(out_env)
        out.mkdir(parents=True, exist_ok=True)
        targets.append(out / name)
        gathered = [f"===== {path.name}\n{path.read_text(errors='replace')}" for path in sorted(logs.glob("*.log"))]
        (out / "gpu_run_logs.txt").write_text("\n".join(gathered))
        (out / "gpu_run.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    for target in targets:
        target.write_text(text)
    print(text)
    print(f"[gpu.sh] table written to {', '.join(map(str, targets))}; logs in {logs}", file=sys.stderr)
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-check", action="store_true", help="run every code path on the CPU with tiny sizes")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default 420)")
    parser.add_argument("--results", help="folder for the table (default benchmarks/results; --cpu-check: a temp dir)")
    parser.add_argument("--part", choices=sorted(CHILD_PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        global _RESULT_PATH
        _RESULT_PATH = Path(args.json)
        save_partial(CHILD_PARTS[args.part](args.cpu_check))
        return 0
    if not args.cpu_check and shutil.which("nvidia-smi") is None and not Path("/dev/nvidia0").exists():
        print("error: no CUDA device: benchmarks/gpu.sh needs a GPU (no nvidia-smi, no /dev/nvidia0)", file=sys.stderr)
        return 2
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
