"""Where exporting one task to ONNX spends its seconds, the first time in a process (what a user sees) and after.

Each measurement runs in a fresh Python process: it imports the SDK, loads the bundled model,
adapts it to ``--support`` and exports the task twice (``task.export_onnx(..., phases=...)``),
reporting every phase: importing the exporter module (``task.export_onnx``'s first call does),
``prepare`` (copying the learner, calibrating the threshold, the
torch reference outputs), each exporter tried (``torchscript``: the TorchScript tracer;
``torch.export``: the dynamo exporter), ``onnx.checker``, the onnxruntime session and the
parity runs of the check, and writing the file with its metadata. ``--exporter torch.export``
restricts the export to the dynamo exporter alone, which is how every task was exported
before the tracer was tried first. Medians over ``--repeats`` processes.

A model is adapted to ``--support``, by default the example folder of its own domain (photos for
a photo model, Omniglot characters otherwise). A results file holds sections, each one run of this
script with its command, its ``--label`` and the commit it measured: ``--append`` adds a section to
``--out`` (how a before/after pair is kept), without it ``--out`` is rewritten.

    OMP_NUM_THREADS=1 python benchmarks/speed/export_time.py [--model protonet-omniglot --model maml-omniglot] \\
        [--repeats 3] [--out benchmarks/results/export_time_cpu.md [--append] [--label after]]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402  (the process start is timed from above the imports)
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXPORTERS = ("default", "torch.export")
PHASES = (
    "prepare",
    "exporter (torchscript)",
    "exporter (torch.export)",
    "onnx.checker",
    "onnxruntime session",
    "parity runs",
    "metadata and writing",
)


def child(model: str, exporter_choice: str, support: Path, threads: int) -> dict[str, object]:
    """One fresh process's figures (run with ``--child``): import, load + adapt, first and second export."""
    import torch

    import fewshot_sdk as fs

    torch.set_num_threads(threads)
    imported = time.perf_counter()
    task = fs.load(model).adapt(fs.SupportSet.from_folder(support))
    adapted = time.perf_counter()
    from fewshot_sdk.export import onnx as exporter  # what task.export_onnx imports on its first call

    exporter_imported = time.perf_counter()
    import onnx

    from fewshot_sdk.export.metadata import OnnxMetadata

    if exporter_choice != "default":
        exporter.EXPORTERS = [entry for entry in exporter.EXPORTERS if entry[0] == exporter_choice]
    exports = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(2):
            phases: dict[str, float] = {}
            start = time.perf_counter()
            path = task.export_onnx(Path(folder) / f"{index}.onnx", phases=phases)
            total = time.perf_counter() - start
            props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
            written_by = OnnxMetadata.from_props(props, str(path)).exporter
            exports.append({"total": total, "phases": phases, "exporter": written_by})
    return {
        "import_s": imported - STARTED,
        "load_adapt_s": adapted - imported,
        "import_exporter_s": exporter_imported - adapted,
        "exports": exports,
    }


def run_child(model: str, exporter_choice: str, support: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--child", model, "--exporter", exporter_choice]
    command += ["--support", str(support), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


def rows_for(model: str, exporter_choice: str, runs: list[dict]) -> list[str]:
    """Two rows: the first export (its total includes importing the exporter module, as a user pays it) and the next."""
    rows = []
    for index, label in enumerate(("first", "second")):
        exports = [run["exports"][index] for run in runs]
        writers = sorted({e["exporter"] for e in exports})
        imports = [run["import_exporter_s"] if index == 0 else 0.0 for run in runs]
        total = statistics.median(e["total"] + i for e, i in zip(exports, imports, strict=True))
        phases = [statistics.median(imports)] + [
            statistics.median(e["phases"].get(p, 0.0) for e in exports) for p in PHASES
        ]
        cells = " | ".join(f"{v:.2f}" if v else "—" for v in phases)
        rows.append(f"| {model} | {exporter_choice} | {label} | {', '.join(writers)} | **{total:.2f}** | {cells} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="Bundled model or checkpoint (repeatable).")
    parser.add_argument("--exporter", action="append", choices=EXPORTERS, help="default: tracer, then torch.export")
    parser.add_argument("--repeats", type=int, default=3, help="Fresh processes per model and exporter choice.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--support", type=Path, default=None, help="Relative to the repo; default: by domain.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--append", action="store_true", help="Add this run as a new section of --out.")
    parser.add_argument("--label", default="", help="The section's title, e.g. before / after a change.")
    args = parser.parse_args()
    if args.child:
        choice = (args.exporter or ["default"])[0]
        print(json.dumps(child(args.child, choice, REPO / args.support, args.threads)))
        return

    import onnx
    import torch
    from timing import device_name

    torch.set_num_threads(args.threads)
    models = args.model or ["protonet-omniglot", "maml-omniglot"]
    choices = args.exporter or list(EXPORTERS)
    rows, notes = [], []
    for model in models:
        support = args.support or default_support(model)
        for choice in choices:
            runs = [run_child(model, choice, support, args.threads) for _ in range(args.repeats)]
            rows.extend(rows_for(model, choice, runs))
            print("\n".join(rows[-2:]), flush=True)
            notes.append(
                f"- {model}, {choice}: adapted to `{support}`; starting the process and importing torch and the SDK "
                f"{statistics.median(r['import_s'] for r in runs):.2f} s, loading and adapting "
                f"{statistics.median(r['load_adapt_s'] for r in runs):.2f} s (not in the export figures)."
            )
    import onnxruntime

    section = [
        f"## {args.label or 'export time'}\n",
        f"device: {device_name()}; torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; code: {code_version()}; each figure the median over "
        f"{args.repeats} fresh processes; `first`: the first export in the process, `second`: the next one.\n",
        "| model | exporter choice | export | written by | total | import fewshot_sdk.export.onnx | "
        + " | ".join(PHASES)
        + " |",
        "| --- | --- | --- | --- | ---: | ---: |" + " ---: |" * len(PHASES),
    ]
    command = "OMP_NUM_THREADS=1 python benchmarks/speed/export_time.py " + " ".join(f"--model {m}" for m in models)
    command += "".join(f" --exporter {c}" for c in choices) + f" --repeats {args.repeats}"
    if args.support:
        command += f" --support {args.support}"
    if args.label:
        command += f" --label {shlex.quote(args.label)}"
    notes.append("- The machine is a shared cloud VM: absolute times drift between runs.")
    text = "\n".join([*section, *rows, "", *notes, "", f"command: `{command}`"])
    print(text)
    if args.out:
        previous = args.out.read_text().rstrip("\n") + "\n\n" if args.append and args.out.is_file() else TITLE
        args.out.write_text(previous + text + "\n")


TITLE = (
    "# Export time: one task to ONNX, split by phase (seconds)\n\n"
    "`exporter choice` default: the TorchScript tracer, then torch.export where the trace is refused; "
    "`torch.export`: the dynamo exporter alone (every export before the tracer was added). `written by`: the "
    "exporter recorded in the file. A phase shows — when it did not run. Each section is one run of "
    "`benchmarks/speed/export_time.py`, with its command and the commit it measured.\n\n"
)


def default_support(model: str) -> Path:
    """The example folder of the model's domain: a photo model is timed on photos, the others on characters."""
    import fewshot_sdk as fs

    return Path("examples/photos/support") if fs.load(model).domain == "photos" else Path("examples/support")


def code_version() -> str:
    """The commit measured, marked ``+uncommitted`` when tracked files differ from it (results files aside)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"]
    changed = subprocess.run(status, capture_output=True, text=True, cwd=REPO)
    commit = head.stdout.strip() or "unknown"
    return f"{commit}+uncommitted" if changed.stdout.strip() else commit


if __name__ == "__main__":
    main()
