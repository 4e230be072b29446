"""Benchmark the fewshot_sdk kernels: Triton vs torch eager vs torch.compile.

For every case it prints the roofline floor, ``max(bytes / bandwidth, FLOPs / peak)``
using the named peak constants of the device, and each implementation's median time
and achieved fraction of that floor (floor / time; 100% = at the hardware limit).

    python benchmarks/speed/kernels.py            # GPU: full sizes, Triton column autotuned
    python benchmarks/speed/kernels.py --quick    # CPU: smaller sizes, torch columns only (< 2 min)

Timing: warm-up calls (which also trigger autotuning / compilation), then the median
of repeated calls, with ``torch.cuda.Event`` on GPU and ``time.perf_counter`` on CPU.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from fewshot_sdk.kernels import pairwise_softmax, reference, sgd_step_


@dataclass(frozen=True)
class Peak:
    """Vendor peak numbers: dense FLOP/s per dtype and memory bandwidth in bytes/s."""

    name: str
    fp32_flops: float  # non-tensor-core FP32 (what the ieee-precision fp32 kernels can use)
    bf16_flops: float  # dense tensor-core BF16
    bandwidth: float


H100_SXM = Peak("H100 SXM", fp32_flops=67e12, bf16_flops=989e12, bandwidth=3.35e12)
H200_SXM = Peak("H200 SXM", fp32_flops=67e12, bf16_flops=989e12, bandwidth=4.8e12)
A100_SXM = Peak("A100 SXM", fp32_flops=19.5e12, bf16_flops=312e12, bandwidth=2.039e12)
L4 = Peak("L4", fp32_flops=30.3e12, bf16_flops=121e12, bandwidth=0.3e12)
#: Matched by substring of torch.cuda.get_device_name(), first match wins.
GPU_PEAKS: list[tuple[str, Peak]] = [("H200", H200_SXM), ("H100", H100_SXM), ("A100", A100_SXM), ("L4", L4)]

#: A VM's share of CPU memory bandwidth has no datasheet number, so on CPU the
#: bandwidth is measured with a copy of this many bytes (large enough to spill most L3s).
CPU_BANDWIDTH_PROBE_BYTES = 512 << 20


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_peak() -> Peak:
    """Nominal FP32 peak: cores x clock x FLOP/cycle (2 FMA units: AVX-512 64, AVX2 32)."""
    cores = torch.get_num_threads()  # the cores torch's kernels actually use
    mhz, flags = 2000.0, ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        mhz = float(next(line.split(":")[1] for line in info.splitlines() if line.startswith("cpu MHz")))
        flags = next(line for line in info.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration, ValueError):
        pass
    per_cycle = 64 if " avx512f" in flags else 32
    flops = cores * mhz * 1e6 * per_cycle
    src = torch.ones(CPU_BANDWIDTH_PROBE_BYTES // 4)
    dst = torch.empty_like(src)
    copy_s = median_time(lambda: dst.copy_(src), torch.device("cpu"), warmup=1, reps=5)
    bandwidth = 2 * CPU_BANDWIDTH_PROBE_BYTES / copy_s  # read + write
    label = f"{cpu_name()}: nominal FLOP/s of {cores} thread(s), measured copy bandwidth"
    return Peak(label, flops, flops, bandwidth)


def device_peak(device: torch.device) -> Peak | None:
    if device.type == "cpu":
        return cpu_peak()
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAKS if key in name), None)


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """Median seconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class Case:
    name: str
    shape: str
    flops: float
    bytes: float
    impls: dict[str, Callable[[], object] | None]


def _compiled(fn: Callable) -> Callable:
    return torch.compile(fn)


def _fusable_softmax(
    q: torch.Tensor, s: torch.Tensor, metric: str, values: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """The formulas written for the compiler: L1 as one broadcast-reduce (no row chunks,
    which torch.compile would unroll), so Inductor can fuse it without materialising
    the [M, N, D] difference tensor."""
    if metric == "l1":
        scores = -(q[:, None, :] - s[None, :, :]).abs().sum(-1)
    else:
        scores = reference.pairwise_scores(q, s, metric)
    probs = torch.softmax(scores / temperature, dim=-1)
    return probs if values is None else probs @ values


def pairwise_case(m: int, n: int, d: int, metric: str, v: int | None, device: torch.device) -> Case:
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(m, d, device=device, generator=gen) / d**0.5
    s = torch.randn(n, d, device=device, generator=gen) / d**0.5
    values = torch.randn(n, v, device=device, generator=gen) if v else None
    per_pair = 2 * d if metric != "l1" else 3 * d  # dot: mul+add; l1: sub+abs+add
    flops = m * n * (per_pair + 5 + (2 * v if v else 0))
    out = m * v if v else m * n
    nbytes = 4 * (m * d + n * d + (n * v if v else 0) + out)
    compiled = _compiled(_fusable_softmax)
    impls: dict[str, Callable[[], object] | None] = {
        "triton": (lambda: pairwise_softmax(q, s, metric, values, 0.5, backend="triton"))
        if device.type == "cuda"
        else None,
        "eager": lambda: pairwise_softmax(q, s, metric, values, 0.5, backend="torch"),
        "compile": lambda: compiled(q, s, metric, values, 0.5),
    }
    op = "softmax@values" if v else "softmax"
    shape = f"{m}x{n}x{d}" + (f", V={v}" if v else "")
    return Case(f"pairwise {op} {metric}", shape, flops, nbytes, impls)


def conv4_shapes() -> list[tuple[int, ...]]:
    """Conv4: 4 x (conv3x3, 64 filters, bias + BatchNorm affine), 1 input channel."""
    shapes: list[tuple[int, ...]] = []
    cin = 1
    for _ in range(4):
        shapes += [(64, cin, 3, 3), (64,), (64,), (64,)]
        cin = 64
    return shapes


def resnet12_shapes() -> list[tuple[int, ...]]:
    """ResNet-12: 4 blocks (64, 160, 320, 640) x 3 conv3x3 + BN, plus a 1x1 shortcut + BN."""
    shapes: list[tuple[int, ...]] = []
    cin = 3
    for c in (64, 160, 320, 640):
        for i in range(3):
            shapes += [(c, cin if i == 0 else c, 3, 3), (c,), (c,)]
        shapes += [(c, cin, 1, 1), (c,), (c,)]
        cin = c
    return shapes


def _foreach_free_step(params: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> None:
    for p, g in zip(params, grads, strict=True):
        p.sub_(g, alpha=lr)


def sgd_case(name: str, shapes: list[tuple[int, ...]], device: torch.device) -> Case:
    params = [torch.randn(shape, device=device) for shape in shapes]
    grads = [torch.randn(shape, device=device) for shape in shapes]
    numel = sum(p.numel() for p in params)
    compiled = _compiled(_foreach_free_step)
    lr = 1e-7  # tiny, so repeated timing calls keep the params finite
    impls: dict[str, Callable[[], object] | None] = {
        "triton": (lambda: sgd_step_(params, grads, lr, backend="triton")) if device.type == "cuda" else None,
        "eager": lambda: sgd_step_(params, grads, lr, backend="torch"),
        "compile": lambda: compiled(params, grads, lr),
    }
    return Case(f"sgd_step_ {name}", f"{len(shapes)} tensors, {numel / 1e6:.2f}M params", 2 * numel,
                12 * numel, impls)  # fmt: skip


def build_cases(device: torch.device, quick: bool) -> list[Case]:
    large = (2000, 200, 128) if quick else (10_000, 1000, 512)
    cases = []
    for m, n, d in [(75, 5, 1600), (300, 20, 64), large]:
        for metric in ("sqeuclidean", "cosine", "l1"):
            cases.append(pairwise_case(m, n, d, metric, None, device))
    cases.append(pairwise_case(*large, "sqeuclidean", 64, device))
    cases.append(pairwise_case(75, 5, 1600, "sqeuclidean", 5, device))
    cases.append(sgd_case("Conv4", conv4_shapes(), device))
    cases.append(sgd_case("ResNet-12", resnet12_shapes(), device))
    return cases


def fmt_time(seconds: float | None, floor: float) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e6:,.1f} ({100 * floor / seconds:.1f}%)"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CPU runs, < 2 minutes)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per implementation")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 gives stable numbers on a shared machine, where a multi-threaded "
        "op waits for its slowest thread's time slice)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    dyn = torch._dynamo.config
    for limit in ("cache_size_limit", "recompile_limit"):  # one compiled fn serves several shapes
        if hasattr(dyn, limit):
            setattr(dyn, limit, 64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    peak = device_peak(device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    reps = args.reps or (50 if device.type == "cuda" else 25)
    warmup = 3

    lines = [
        f"## fewshot_sdk kernels benchmark on {dev_name}",
        "",
        f"torch {torch.__version__}, float32, mode {'quick' if args.quick else 'full'}, "
        f"{torch.get_num_threads()} CPU thread(s), warm-up {warmup}, median of {reps}.",
    ]
    if peak is None:
        lines.append("Peak numbers unknown for this device: floor fractions are not computed.")
    else:
        lines.append(
            f"Floor = max(bytes / {peak.bandwidth / 1e12:.3g} TB/s, "
            f"FLOPs / {peak.fp32_flops / 1e12:.3g} TFLOP/s fp32) ({peak.name}). "
            "Cells: median µs (achieved fraction of the floor)."
        )
    if device.type != "cuda":
        lines.append("No CUDA device: Triton column n/a (the interpreter is a correctness tool, not timed).")
    lines += [
        "",
        "| case | shape | GFLOP | MB | floor µs (bound) | Triton µs | torch eager µs | torch.compile µs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for case in build_cases(device, args.quick):
        if peak is not None:
            t_mem, t_flop = case.bytes / peak.bandwidth, case.flops / peak.fp32_flops
            floor = max(t_mem, t_flop)
            floor_txt = f"{floor * 1e6:,.2f} ({'memory' if t_mem >= t_flop else 'compute'})"
        else:
            floor, floor_txt = float("nan"), "n/a"
        cells = []
        for key in ("triton", "eager", "compile"):
            fn = case.impls[key]
            cells.append(fmt_time(median_time(fn, device, warmup, reps) if fn else None, floor))
        gflop, mbytes = case.flops / 1e9, case.bytes / 1e6
        head = f"| {case.name} | {case.shape} | {gflop:.3f} | {mbytes:.2f} | {floor_txt} | "
        lines.append(head + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
