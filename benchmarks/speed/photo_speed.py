"""CPU speed of the photo backbone (EfficientNet-Lite0 embedding) against its FLOP floor, and by engine.

Five parts; all but the floor are measured in fresh processes, because glibc's malloc adapts its
thresholds to the allocations a process has made, and torch eager's speed with them (a 224x224
forward run first made later 192x192 ones 2x faster):

- **The floor.** Lite0's arithmetic at the bundled model's resolution (192x192), counted from
  the module shapes: a forward hook on every convolution adds ``output elements x (in_channels /
  groups) x kh x kw`` multiply-adds (FLOPs = 2 x MACs; batch norm, ReLU6, the residual adds and
  the pooling are a few element-wise operations per activation and are left out). The core's
  peak: the vector FMA its ``/proc/cpuinfo`` flags name, and a practical figure, a large
  single-precision matrix product (sgemm) on the same threads, through torch (MKL), numpy
  (OpenBLAS) and onnxruntime (MLAS), which differ by up to 2x on one core. "% of peak" below is
  the embedding's FLOPs per second over the best of them.
- **Engines** at that resolution on ``--threads`` (default 1), for the same bundled
  ``protonet-photos`` backbone: torch eager in NCHW (the weights and input in the default
  layout, the network's own conversion bypassed), torch eager channels-last with batch norm
  unfolded (the network as trained) and folded into the convolutions (what the SDK's inference
  runs, :mod:`fewshot_sdk.models.folding`), ``torch.compile`` of the channels-last network
  (compile time reported apart), and onnxruntime on
  the backbone's network as ``runtime="onnxruntime"`` runs it (:class:`OnnxBackbone`: embedding
  only, traced by the SDK's exporter, which folds batch norm into the convolutions; onnxruntime's
  default optimisations then fuse ReLU6 and the residual additions into them and run them in its
  blocked NCHWc layout; ``--threads`` intra-op threads). Every engine's
  output is checked against torch eager first. Batch 16 and batch 1 (one query). Timings are paired and
  interleaved (:func:`timing.interleaved_groups`: torch paths round by round, onnxruntime in
  its own group, the groups taking turns), after warm-up; medians.
- **The allocator**: the SDK's torch path on 32 photos by ``Backbone.inference_chunk`` (4, the
  SDK's, or 16 photos through the network at a time), with glibc's default malloc and with two malloc
  environment variables that keep freed memory in the process, each in fresh processes, with the
  fresh pages (minor page faults) each image costs: memory malloc gave back to the kernel and
  takes again, zero-filled, on the next call.
- **adapt** on ``--adapt-images`` preprocessed photos: ``fs.load("protonet-photos")`` against
  ``fs.load("protonet-photos", runtime="onnxruntime")`` (the backbone's inference in onnxruntime,
  :mod:`fewshot_sdk.export.onnx_backbone`), each in fresh processes (loading the onnxruntime one
  in the same process would change the torch one's malloc), and what opting in adds to loading.
- **By resolution** (``--sweep``): images/s of the SDK's torch path at 224, 192 and 160 pixels
  (ImageNet weights), each in fresh processes.

    OMP_NUM_THREADS=1 python benchmarks/speed/photo_speed.py [--rounds 10] [--sweep] [--clock cpu|wall] \\
        [--out benchmarks/results/photo_speed_cpu.md]

``--clock cpu`` (the default, one thread only) times the process's CPU seconds, which other jobs
taking turns on a shared machine's cores do not stretch.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name, interleaved_groups, minor_faults
from timing import report as print_and_write

import fewshot_sdk as fs
from fewshot_sdk.export.onnx_backbone import OnnxBackbone
from fewshot_sdk.models.backbones import Backbone

RESOLUTIONS = ((224, 256), (192, 219), (160, 183))
BATCHES = (16, 1)
CHUNKS = (4, 16)
#: glibc malloc settings that keep freed activations in the process (read from the environment at start).
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
CHANNELS_LAST = "torch eager, channels-last (the SDK's layout), batch norm unfolded"
FOLDED = "torch eager, channels-last, batch norm folded (the SDK's inference)"


# ----------------------------------------------------------------- the floor
def conv_macs(body: nn.Module, size: int) -> dict[str, int]:
    """Multiply-adds of one image through ``body``, by kind of convolution, from each convolution's shapes."""
    totals: dict[str, int] = {}

    def count(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        macs = output[0].numel() * (module.in_channels // module.groups) * kh * kw
        if module.groups > 1:
            kind = f"depthwise {kh}x{kw}"
        elif (kh, kw) == (1, 1):
            kind = "pointwise 1x1 (expand, project, head)"
        else:
            kind = f"full {kh}x{kw} (stem)"
        totals[kind] = totals.get(kind, 0) + macs

    hooks = [m.register_forward_hook(count) for m in body.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            body(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return totals


def vector_fma() -> str:
    """The widest fused multiply-add the cpuinfo flags name."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if "avx512f" in flags:
        return "AVX-512 (avx512f) with FMA: 16 fp32 lanes per FMA"
    if "fma" in flags and "avx2" in flags:
        return "AVX2 with FMA3: 8 fp32 lanes per FMA"
    return "no AVX2/AVX-512 FMA flag"


def sgemm_gflops(
    clock: Callable[[], float], sizes: tuple[int, ...] = (1024, 2048), repeats: int = 10
) -> dict[str, float]:
    """A practical peak: n x n x n float32 matrix products, best of ``repeats`` after warm-up, per library.

    Three libraries, because their sgemm differ by up to 2x on one core: torch's (MKL), numpy's
    (OpenBLAS) and onnxruntime's (MLAS). The best of them is the peak the engines are measured against.
    """
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    best: dict[str, float] = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a_numpy, b_numpy = a.numpy(), b.numpy()
        matrix = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "ABC"]
        graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm", matrix[:2], matrix[2:])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # one every onnxruntime >= 1.18 reads
        onnx.checker.check_model(model)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        runs = {
            "torch (MKL)": lambda a=a, b=b: torch.mm(a, b),
            "numpy (OpenBLAS)": lambda a=a_numpy, b=b_numpy: a @ b,
            "onnxruntime (MLAS)": lambda a=a_numpy, b=b_numpy, s=session: s.run(None, {"A": a, "B": b}),
        }
        for name, run in runs.items():
            run()
            seconds = min(timed(run, clock) for _ in range(repeats))
            best[name] = max(best.get(name, 0.0), 2 * n**3 / seconds / 1e9)
    return best


def load_average() -> str:
    """The 1-minute load average (runnable processes), to say how busy the shared machine was."""
    path = Path("/proc/loadavg")
    return path.read_text().split()[0] if path.is_file() else "unknown"


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    start = clock()
    fn()
    return clock() - start


# ----------------------------------------------------------------- engines
def nchw_copy(backbone: Backbone) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same network in the default (NCHW) layout, skipping EfficientNetLite0's conversion of its input."""
    body = copy.deepcopy(backbone.body).to(memory_format=torch.contiguous_format)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return nn.Sequential.forward(body, x)

    return forward


def compiled(backbone: Backbone) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """``torch.compile`` of the channels-last network, or None and the error's first line."""
    try:
        return torch.compile(backbone.body), ""
    except Exception as exc:  # reported, not fatal: the other engines still run
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"


def engines(size: int, threads: int, rounds: int, clock: Callable[[], float]) -> tuple[list, dict[str, object]]:
    learner = fs.load("protonet-photos")
    backbone = learner.backbone.eval()
    notes: dict[str, object] = {}
    folded = learner.inference_learner().backbone.body  # what adapt and predict run (models/frozen.py)
    assert folded is not backbone.body
    start = clock()
    engine = OnnxBackbone(folded, backbone.input_shape, threads)  # what runtime="onnxruntime" runs
    notes["export_s"] = clock() - start
    nchw = nchw_copy(backbone)
    compiled_body, notes["compile_error"] = compiled(backbone)
    rows = []
    for batch in BATCHES:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected = backbone(x)
        torch_paths: dict[str, Callable[[], object]] = {
            "torch eager, NCHW": lambda x=x: nchw(x),
            CHANNELS_LAST: lambda x=x: backbone.body(x),  # the whole batch at once, as the other engines
            FOLDED: lambda x=x: folded(x),
        }
        if compiled_body is not None:
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    got = compiled_body(x)
                notes[f"compile_s_batch{batch}"] = time.perf_counter() - start
                torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
                torch_paths["torch.compile (channels-last)"] = lambda x=x, body=compiled_body: body(x)
            except Exception as exc:
                notes["compile_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
                compiled_body = None
        with torch.inference_mode():
            torch.testing.assert_close(nchw(x), expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(backbone.body(x), expected, atol=1e-4, rtol=1e-4)
        with torch.inference_mode():
            notes[f"ort_max_diff_batch{batch}"] = float((engine(x) - expected).abs().max())
        assert notes[f"ort_max_diff_batch{batch}"] < 1e-3, notes

        def inference(fn: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                with torch.inference_mode():
                    return fn()

            return run

        groups = [
            {name: inference(fn) for name, fn in torch_paths.items()},
            {"onnxruntime (exported backbone)": lambda x=x: engine(x)},
        ]
        count = rounds if batch > 1 else rounds * 4
        samples = interleaved_groups(groups, count, blocks=2, clock=clock)
        for name, times in samples.items():
            seconds = statistics.median(times)
            rows.append((batch, name, seconds))
            print(f"batch {batch} | {name} | {1e3 * seconds:.1f} ms | {batch / seconds:.1f} images/s", flush=True)
    return rows, notes


def adapt_figures(runtime: str, images: int, threads: int, rounds: int, clock: Callable[[], float]) -> list:
    """In this (fresh) process: ``fs.load("protonet-photos", runtime=runtime)`` adapting on ``images`` photos.

    What loading with ``runtime`` costs beyond a torch load, the median of ``rounds`` adapts after one
    warm-up, and the adapted task's probabilities on 5 fixed queries.
    """
    start = clock()
    learner = fs.load("protonet-photos", runtime=runtime, threads=threads)
    loading = clock() - start
    start = clock()
    fs.load("protonet-photos")
    loading -= clock() - start  # a torch load's own cost, so what remains is the opt-in's
    x = torch.randn(images, 3, *learner.preprocess_config.image_size, generator=torch.Generator().manual_seed(3))
    support = fs.SupportSet.from_tensors(x, torch.arange(images) % 10, [f"class{i}" for i in range(10)])
    queries = torch.randn(5, *x.shape[1:], generator=torch.Generator().manual_seed(4))
    probs = learner.adapt(support).predict(queries).probs.tolist()
    seconds = [timed(lambda: learner.adapt(support), clock) for _ in range(rounds)]
    return [loading, statistics.median(seconds), probs]


def adapt_lines(args: argparse.Namespace, processes: int = 3) -> list[str]:
    """``adapt`` with the torch learner and with ``runtime="onnxruntime"``, each in fresh processes, alternating."""
    runs: dict[str, list[list]] = {"torch": [], "onnxruntime": []}
    for repeat in range(processes):
        for runtime in list(runs) if repeat % 2 == 0 else list(runs)[::-1]:
            runs[runtime].append(in_fresh_process("adapt-one", args, 0.0, ["--runtime", runtime]))
    torch_s, ort_s = (statistics.median(run[1] for run in runs[name]) for name in ("torch", "onnxruntime"))
    opt_in = statistics.median(run[0] for run in runs["onnxruntime"])
    difference = (torch.tensor(runs["onnxruntime"][0][2]) - torch.tensor(runs["torch"][0][2])).abs().max()
    images = args.adapt_images
    return [
        f"## adapt on {images} photos (10 classes, preprocessed tensors), {args.threads} thread(s)",
        "",
        '`fs.load("protonet-photos")` against `fs.load("protonet-photos", runtime="onnxruntime")`, whose backbone '
        f"inference runs in onnxruntime, each in {processes} fresh processes (alternating): the median over them "
        f"of each process's median of {args.adapt_rounds} adapts after a warm-up one.",
        "",
        "| learner | adapt (s) | images/s |",
        "| --- | ---: | ---: |",
        f"| torch | {torch_s:.2f} | {images / torch_s:.1f} |",
        f'| runtime="onnxruntime" | {ort_s:.2f} | {images / ort_s:.1f} |',
        "",
        f"- {torch_s / ort_s:.2f}x faster; opting in (trace, session, check) adds {opt_in:.2f} s to `fs.load`, "
        f"recovered after {opt_in * images / (torch_s - ort_s):.0f} embedded images. Largest |difference| of the "
        f"adapted tasks' probabilities on 5 queries: {float(difference):.1e}.",
        "",
    ]


def embed_figures(
    chunk: int, clock: Callable[[], float], size: int = 0, images: int = 32, repeats: int = 4
) -> list[float]:
    """In this (fresh) process: the SDK's torch embedding of ``images`` photos by chunks of ``chunk``.

    The bundled photo model, or (``size``) the ImageNet-weights network at that resolution. Seconds
    per image (median of ``repeats`` after 2 warm-up calls) and fresh pages per image.
    """
    if size:
        shorter = dict(RESOLUTIONS)[size]
        learner = fs.create("protonet", backbone="efficientnet-lite0", image_size=size, resize_shorter=shorter)
    else:
        learner = fs.load("protonet-photos")
    if chunk:  # else the SDK's own, sized by INFERENCE_CHUNK_BYTES
        learner.backbone.inference_chunk = chunk
    twin = learner.freeze().inference_learner().backbone  # what adapt and predict embed with
    x = torch.randn(images, 3, *learner.preprocess_config.image_size, generator=torch.Generator().manual_seed(5))
    seconds, pages = [], []
    with torch.inference_mode():
        for index in range(2 + repeats):
            before, start = minor_faults(), clock()
            twin(x)
            if index >= 2:
                seconds.append((clock() - start) / images)
                pages.append((minor_faults() - before) / images)
    return [statistics.median(seconds), statistics.median(pages), twin.inference_chunk]


def allocator_lines(args: argparse.Namespace, processes: int = 3) -> list[str]:
    """The SDK's torch path by chunk size and glibc malloc setting, each measurement a fresh process."""
    settings = {"glibc default": {}, "MALLOC_MMAP_THRESHOLD_=32 MiB, MALLOC_TRIM_THRESHOLD_=1 GiB": MALLOC_TUNED}
    runs: dict[tuple[str, int], list[list[float]]] = {}
    for repeat in range(processes):  # alternating orders, so drift in the machine's load hits every cell
        cells = [(name, chunk) for name in settings for chunk in CHUNKS]
        for name, chunk in cells if repeat % 2 == 0 else cells[::-1]:
            extra = ["--chunk", str(chunk)]
            runs.setdefault((name, chunk), []).append(in_fresh_process("embed", args, 0.0, extra, settings[name]))
    lines = [
        f"## The SDK's torch path and the allocator: 32 photos through `learner.backbone(x)`, {args.threads} thread(s)",
        "",
        "`Backbone.inference_chunk` photos go through the network at a time (the SDK's: 4, the most whose largest "
        "layer output fits `INFERENCE_CHUNK_BYTES`). Fresh pages: minor "
        "page faults per image, memory glibc's malloc handed back to the kernel and takes again, zero-filled by "
        "the kernel, on the next call. The two malloc variables keep that memory in the process; glibc reads them "
        f"when a process starts. Each cell: the median over {processes} fresh processes (each the median of 4 "
        "calls after 2 warm-up calls), run in alternating orders.",
        "",
        "| malloc | chunk | ms per image | images/s | fresh pages per image |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for (name, chunk), figures in runs.items():
        per_image = statistics.median(f[0] for f in figures)
        pages = statistics.median(f[1] for f in figures)
        lines.append(f"| {name} | {chunk} | {1e3 * per_image:.1f} | {1 / per_image:.1f} | {pages:.0f} |")
    return [*lines, ""]


def sweep_lines(args: argparse.Namespace, processes: int = 3) -> list[str]:
    """Images/s of the SDK's torch path by resolution (ImageNet weights), each in fresh processes, alternating."""
    runs: dict[int, list[list[float]]] = {size: [] for size, _ in RESOLUTIONS}
    for repeat in range(processes):
        for size in list(runs) if repeat % 2 == 0 else list(runs)[::-1]:
            runs[size].append(in_fresh_process("embed", args, 0.0, ["--chunk", "0", "--size", str(size)]))
    lines = [
        "## By resolution (the SDK's torch path, ImageNet weights, glibc's default malloc)",
        "",
        f"32 photos through `learner.backbone(x)` in the SDK's chunks; the median over {processes} fresh processes "
        "each.",
        "",
        "| resolution | threads | chunk | images/s | ms/image | fresh pages per image |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, figures in runs.items():
        per_image = statistics.median(f[0] for f in figures)
        pages = statistics.median(f[1] for f in figures)
        chunk = figures[0][2]
        lines.append(
            f"| {size}x{size} | {args.threads} | {chunk} | {1 / per_image:.1f} | {1e3 * per_image:.1f} | {pages:.0f} |"
        )
    return [*lines, ""]


PARTS = ("engines", "allocator", "adapt", "sweep")
#: Parts that compare separate processes (the parent starts them); the others run in one fresh process each.
PARTS_OF_PROCESSES: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "allocator": allocator_lines,
    "adapt": adapt_lines,
    "sweep": sweep_lines,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10, help="Interleaved rounds at batch 16 (4x as many at 1).")
    parser.add_argument("--sweep", action="store_true", help="Also images/s by resolution (3 processes each).")
    parser.add_argument("--adapt-images", type=int, default=64, help="Support set size of the adapt comparison.")
    parser.add_argument("--adapt-rounds", type=int, default=4)
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this process's CPU seconds (one thread only), which other jobs on the cores do not stretch.",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--part", choices=(*PARTS, "embed", "adapt-one"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runtime", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--peak", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu sums the CPU time of every thread: use it with --threads 1, or --clock wall")
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.part:
        print(json.dumps(part_lines(args.part, args, clock)))
        return
    # a fresh inductor cache, so the compile time reported is a first compile's, not a hit in an earlier run's cache
    cache = tempfile.mkdtemp(prefix="photo_speed_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        report(args, clock)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def part_lines(part: str, args: argparse.Namespace, clock: Callable[[], float]) -> list:
    """One part of the report, measured in this process (a fresh one: see :func:`in_fresh_process`)."""
    if part == "engines":
        return engine_lines(args.threads, args.rounds, clock, args.peak)
    if part == "embed":
        return embed_figures(args.chunk, clock, args.size)
    if part == "adapt-one":
        return adapt_figures(args.runtime, args.adapt_images, args.threads, args.adapt_rounds, clock)
    raise ValueError(f"no part {part!r} runs in one process")


def in_fresh_process(
    part: str, args: argparse.Namespace, peak: float, extra: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> list:
    """Each part in a process of its own: glibc's malloc adapts its thresholds to the allocations it has seen,
    so torch's speed depends on what ran before in the process (a 224x224 forward first made 192x192 ones 2x
    faster); a fresh process measures what a user's process sees."""
    command = [sys.executable, __file__, "--part", part, "--threads", str(args.threads), "--clock", args.clock]
    command += ["--rounds", str(args.rounds), "--adapt-images", str(args.adapt_images)]
    command += ["--adapt-rounds", str(args.adapt_rounds), "--peak", str(peak), *extra]
    environment = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the {part} part failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    load_before = load_average()
    learner = fs.load("protonet-photos")
    size = learner.preprocess_config.image_size[0]  # square: the floor and the engines at the model's own size
    macs = conv_macs(learner.backbone.body, size)
    flops = 2 * sum(macs.values())
    sgemm = sgemm_gflops(clock)
    peak = max(sgemm.values())
    lines = [
        "# Photo backbone speed on CPU (EfficientNet-Lite0 embedding)",
        "",
        f"device: {device_name()}; torch {torch.__version__}; {args.threads} thread(s). The machine is shared: "
        f"load average {load_before} when the run started, LOAD_AFTER when it ended, on {os.cpu_count()} cores. "
        + (
            "Times are the measuring process's CPU seconds (`time.process_time`), which other jobs taking turns "
            "on the cores do not stretch (they still share caches and memory bandwidth); torch.compile's compile "
            "time is wall seconds (it compiles in worker processes too)."
            if args.clock == "cpu"
            else "Times are wall seconds."
        )
        + " Each section after the floor ran in fresh processes.",
        "",
        f"## The floor at {size}x{size}",
        "",
        "Multiply-adds per image, counted by a forward hook on every convolution "
        "(output elements x in_channels/groups x kh x kw):",
        "",
        "| convolutions | MMACs per image | share |",
        "| --- | ---: | ---: |",
    ]
    total = sum(macs.values())
    for kind, value in sorted(macs.items(), key=lambda item: -item[1]):
        lines.append(f"| {kind} | {value / 1e6:.1f} | {100 * value / total:.1f}% |")
    lines += [
        f"| **all** | **{total / 1e6:.1f}** | |",
        "",
        f"= {flops / 1e9:.3f} GFLOPs per image (2 per multiply-add). This core: {vector_fma()}. Its practical "
        f"peak, float32 sgemm of n = 1024 and 2048 on {args.threads} thread(s), the best of 10 runs per library:",
        "",
        "| sgemm library | GFLOP/s |",
        "| --- | ---: |",
        *(f"| {name} | {value:.1f} |" for name, value in sgemm.items()),
        "",
        f"Peak = {peak:.1f} GFLOP/s: a compute-bound embedding would reach {peak * 1e9 / flops:.0f} images/s.",
        "",
    ]
    for part in PARTS if args.sweep else PARTS[:-1]:
        if part in PARTS_OF_PROCESSES:
            lines += PARTS_OF_PROCESSES[part](args)
        else:
            lines += in_fresh_process(part, args, peak)
    command = f"OMP_NUM_THREADS={args.threads} python benchmarks/speed/photo_speed.py"
    command += f" --threads {args.threads} --rounds {args.rounds}" + (" --sweep" if args.sweep else "")
    command += f" --adapt-images {args.adapt_images} --adapt-rounds {args.adapt_rounds} --clock {args.clock}"
    lines.append(f"command: `{command}`")
    text = "\n".join(lines).replace("LOAD_AFTER", load_average())
    print_and_write(text, args.out)


def engine_lines(threads: int, rounds: int, clock: Callable[[], float], peak: float) -> list[str]:
    learner = fs.load("protonet-photos")
    size = learner.preprocess_config.image_size[0]
    flops = 2 * sum(conv_macs(learner.backbone.body, size).values())
    rows, notes = engines(size, threads, rounds, clock)
    lines = [
        f"## Engines at {size}x{size}, {threads} thread(s)",
        "",
        f"Each engine takes the whole batch at once. Median of interleaved rounds after warm-up ({rounds} rounds "
        f"at batch 16, {4 * rounds} at batch 1, in 2 blocks). % of peak: the images' FLOPs per second over the "
        "best sgemm above.",
        "",
        "| batch | engine | ms per batch | images/s | % of sgemm peak | vs channels-last |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for batch in BATCHES:
        base = next(s for b, n, s in rows if b == batch and n == CHANNELS_LAST)
        for b, name, seconds in rows:
            if b == batch:
                rate = batch / seconds
                percent = 100 * rate * flops / (peak * 1e9)
                lines.append(
                    f"| {batch} | {name} | {1e3 * seconds:.1f} | {rate:.1f} | {percent:.1f}% | {base / seconds:.2f}x |"
                )
    compile_line = (
        f"torch.compile: {notes['compile_error']}"
        if notes["compile_error"]
        else "torch.compile (inductor, default mode, an empty compile cache): the first call compiled in "
        + ", ".join(f"{notes[k]:.1f} s (batch {k.rsplit('batch', 1)[1]})" for k in notes if k.startswith("compile_s"))
        + " (a new batch size compiles again), not in the figures above"
    )
    return [
        *lines,
        "",
        f"- {compile_line}.",
        "- onnxruntime: the backbone's network traced, loaded into a session and checked against torch by "
        f'`OnnxBackbone` (what `runtime="onnxruntime"` runs) in {notes["export_s"]:.1f} s; each call includes '
        "the tensor-to-numpy and back; largest |difference| from torch eager "
        f"{max(v for k, v in notes.items() if k.startswith('ort_max_diff')):.1e}.",
        "",
    ]


if __name__ == "__main__":
    main()
