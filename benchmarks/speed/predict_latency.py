"""What ``predict`` costs on top of its engine, for the torch task and the onnxruntime task, per query batch.

The task: the bundled model adapted to ``--support`` (default ``examples/support``: 3 classes x
5 shots of real Omniglot), saved with ``task.save(folder, onnx=True)`` and reloaded with
``fs.load_task(folder, runtime="onnxruntime")``. Five paths classify the same model-ready
batch [B, C, H, W] of random pixels, measured in one process, interleaved (every round
calls each path once, in a shuffled order, after a warm-up):

- SDK torch: ``task.predict(batch)``: option and input checks, chunking, ``Prediction``;
- eager module: the task network itself, ``task.network`` (the module ``predict`` runs and the
  ONNX graph is exported from: logits, probabilities, novelty) called directly on the tensor
  under ``torch.inference_mode``;
- eager score: the SDK's own scoring call, ``learner.score_with_novelty(state, batch)`` and
  ``learner.probabilities``, under ``torch.inference_mode`` (what ``predict`` computes);
- SDK onnxruntime: ``deployed.predict(batch)``, with the same checks and ``Prediction``;
- raw onnxruntime: ``session.run(None, {"images": batch})`` on that task's own session.

Ratios are paired: the median over rounds of one path's time over another's in the same
round. The torch paths are interleaved with each other and the onnxruntime paths with each
other, the two groups taking turns in blocks (``timing.interleaved_groups``): a call made
right after the other engine's runs on caches that engine left cold (measured: +30-40 µs on
a 0.1 ms onnxruntime call after a torch forward), which a deployment using one engine never
pays. ``--mixed`` interleaves all five paths instead. torch and onnxruntime get the same
number of threads.

    OMP_NUM_THREADS=1 python benchmarks/speed/predict_latency.py [--model protonet-omniglot] [--batch 1 --batch 64] \\
        [--threads 1] [--out benchmarks/results/predict_latency_cpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import device_name, interleaved_groups, interleaved_seconds, paired_ratio, report

import fewshot_sdk as fs

REPO = Path(__file__).resolve().parents[2]
BATCHES = (1, 64)
PATHS = ("SDK torch", "eager module", "eager score", "SDK onnxruntime", "raw onnxruntime")


def rounds_for(batch: int, budget: int) -> int:
    """Fewer rounds for big batches: about the same wall time per row."""
    return max(30, budget // batch)


def measure(
    model: str, threads: int, budget: int, support_dir: Path, batches: tuple[int, ...], mixed: bool
) -> list[str]:
    learner = fs.load(model)
    task = learner.adapt(fs.SupportSet.from_folder(support_dir))
    state = task.state
    module = task.network
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        deployed = fs.load_task(task.save(Path(folder) / "task", onnx=True), runtime="onnxruntime", threads=threads)
        session = deployed.classifier.session
        generator = torch.Generator().manual_seed(0)
        for batch in batches:
            x = torch.randn(batch, *learner.preprocess_config.input_shape, generator=generator)
            x_np = x.numpy()

            def eager_module(x: torch.Tensor = x) -> object:
                with torch.inference_mode():
                    return module(x)

            def eager_score(x: torch.Tensor = x) -> object:
                with torch.inference_mode():
                    logits, novelty = learner.score_with_novelty(state, x)
                    return learner.probabilities(logits), novelty

            torch_paths = {
                "SDK torch": lambda x=x: task.predict(x),
                "eager module": eager_module,
                "eager score": eager_score,
            }
            onnx_paths = {
                "SDK onnxruntime": lambda x=x: deployed.predict(x),
                "raw onnxruntime": lambda x_np=x_np: session.run(None, {"images": x_np}),
            }
            difference = float((task.predict(x).probs - deployed.predict(x).probs).abs().max())
            if mixed:
                samples = interleaved_seconds({**torch_paths, **onnx_paths}, rounds_for(batch, budget))
            else:
                samples = interleaved_groups([torch_paths, onnx_paths], rounds_for(batch, budget))
            ms = {name: 1e3 * statistics.median(samples[name]) for name in PATHS}
            rows.append(
                f"| {model} | {batch} | "
                + " | ".join(f"{ms[name]:.3f}" for name in PATHS)
                + f" | {paired_ratio(samples, 'SDK torch', 'eager module'):.3f}x"
                f" | {paired_ratio(samples, 'SDK torch', 'eager score'):.3f}x"
                f" | {paired_ratio(samples, 'SDK onnxruntime', 'raw onnxruntime'):.3f}x"
                f" | {paired_ratio(samples, 'SDK torch', 'SDK onnxruntime'):.2f}x | {difference:.1e} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="Bundled model or checkpoint (repeatable).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and onnxruntime alike.")
    parser.add_argument("--budget", type=int, default=3000, help="Rounds at batch 1 (batch B: budget / B, >= 30).")
    parser.add_argument("--support", type=Path, default=Path("examples/support"), help="Relative to the repo.")
    parser.add_argument("--batch", type=int, action="append", help="Query batch sizes (repeatable).")
    parser.add_argument("--mixed", action="store_true", help="Interleave torch and onnxruntime calls too.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = args.model or ["protonet-omniglot"]
    batches = tuple(args.batch or BATCHES)

    import onnxruntime

    header = [
        "# Predict latency: the SDK's torch and onnxruntime tasks against their bare engines\n",
        f"device: {device_name()}; {args.threads} thread(s) for torch and onnxruntime; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; task: the model adapted to `{args.support}`, queries: a "
        "model-ready float32 batch; medians of interleaved rounds (order shuffled each round) after warm-up. "
        "Milliseconds.\n",
        "Ratios are paired (median over rounds of the two paths' times in the same round). "
        + (
            "All five paths interleaved call by call (`--mixed`). "
            if args.mixed
            else "torch paths interleaved with each other, onnxruntime paths with each other, the two groups "
            "taking turns in blocks. "
        )
        + "The paths are defined in `benchmarks/speed/predict_latency.py`'s docstring.\n",
        "| model | batch | " + " | ".join(PATHS) + " | SDK torch / eager module | SDK torch / eager score "
        "| SDK onnxruntime / raw | SDK torch / SDK onnxruntime | max abs Δprobs torch vs onnxruntime |",
        "| --- | ---: |" + " ---: |" * (len(PATHS) + 5),
    ]
    rows = []
    for model in models:
        rows.extend(measure(model, args.threads, args.budget, REPO / args.support, batches, args.mixed))
    command = "OMP_NUM_THREADS=1 python benchmarks/speed/predict_latency.py " + " ".join(f"--model {m}" for m in models)
    command += "".join(f" --batch {b}" for b in batches) + f" --budget {args.budget} --threads {args.threads}"
    command += " --mixed" if args.mixed else ""
    notes = [
        "- The machine is shared (a cloud VM), so absolute times drift between runs; the paired ratios are the "
        "figures to compare.",
    ]
    text = "\n".join([*header, *rows, "", *notes, "", f"command: `{command}`"])
    report(text, args.out)


if __name__ == "__main__":
    main()
