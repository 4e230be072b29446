"""Writing a task network as one self-contained ``.onnx`` file that reproduces it.

The graph's input ``images`` is the batch ``task.preprocess(images)`` produces ([B, C, H, W]
float32, B dynamic); its outputs are ``logits``, ``probs`` and ``novelty`` (each query's open-set
score, :mod:`fewshot_sdk.task.open_set`; the ``reject="auto"`` threshold travels in the metadata).
The graph computes the task network (:class:`~fewshot_sdk.task.network.TaskNetwork`) that
``predict`` runs, task state baked in as constants; this module knows no method and no task.

Two exporters are tried in turn. First torch's TorchScript tracer (``dynamo=False``): a fraction of
a second for these small static modules, where the ``torch.export``-based one takes seconds (mostly
importing and setting up dynamo and onnxscript). A trace records one path through the Python code,
so it is refused as soon as the tracer warns (``TracerWarning``: a Python bool, number or length
read off a tensor, whose value the trace would freeze); methods that turn the batch size into a
Python int thus never take this path. Code on the traced path that must branch keeps the branch out
of the trace: the kernels' size checks run only outside it, the weighted-L1 kernel takes its one
export form there (``kernels.reference.exporting``; its value-dependent branch to ``cdist`` once
gave traced graphs that were silently wrong on some inputs), and EfficientNet-Lite pads with the
padding planned for its input size. Then ``torch.export`` (``dynamo=True``), which refuses
data-dependent branches itself. The file's ``fewshot.exporter`` records which one wrote it.

The graph is checked with ``onnx.checker`` and run with onnxruntime on batches of other sizes than
the traced one (and of varied content); only if its probabilities and novelty match torch's within
1e-4 (novelty: relative to its scale) is it written, atomically, with the ``fewshot.*`` metadata.
Otherwise :class:`ExportError` says why.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from fewshot_sdk.checkpoint import follow_umask
from fewshot_sdk.errors import FewShotError, InputError
from fewshot_sdk.export.metadata import INPUT_NAME, OUTPUT_NAMES, OnnxMetadata
from fewshot_sdk.version import __version__

#: Largest |probs(onnx) - probs(torch)| an export may show on its check batch.
TOLERANCE = 1e-4
MIN_OPSET = 13
TRACE_BATCH = 2  # not 1 (torch.export specialises size-1 dimensions), nor 1 or 3 (the check batches)
QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration", "torch.fx.experimental.symbolic_shapes")


class ExportError(FewShotError):
    """The task could not be written as an ONNX graph that reproduces it."""


@dataclass(frozen=True)
class VerifiedGraph:
    """A graph that reproduced its network on the parity check, not yet written: what to write and who wrote it."""

    proto: onnx.ModelProto
    exporter: str


def verified_graph(
    network: nn.Module,
    input_shape: tuple[int, ...],
    what: str = "task",
    opset: int | None = None,
    phases: dict[str, float] | None = None,
) -> VerifiedGraph:
    """``network`` (images -> logits, probs, novelty; eval, no autograd) as an ONNX graph that matches it.

    ``what`` names the network in errors (``"protonet task"``). Raises :class:`ExportError` when
    no exporter writes a graph whose probabilities and novelty match torch's.
    """
    opset = _check_opset(opset)
    with _timed(phases, "prepare"):
        if any(t.device.type != "cpu" for t in (*network.parameters(), *network.buffers())):
            network = copy.deepcopy(network).cpu()  # never move the caller's network
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(TRACE_BATCH, *input_shape, generator=generator)
        checks = [
            torch.randn(1, *input_shape, generator=generator),  # batch 1
            torch.cat(  # batch 3 of varied content: noise, a blank page, a bright offset image
                [
                    torch.randn(1, *input_shape, generator=generator),
                    torch.zeros(1, *input_shape),
                    3 * torch.rand(1, *input_shape, generator=generator) + 1,
                ]
            ),
        ]
        with torch.no_grad():  # torch's own network: an inference engine answers only under inference_mode
            expected = [[output.numpy() for output in network(check)[1:]] for check in checks]

    failures = []
    for name, exporter in EXPORTERS:  # the fast tracer first, torch.export where the trace is refused
        try:
            with _timed(phases, f"exporter ({name})"):
                proto = exporter(network, example, opset)
            with _timed(phases, "onnx.checker"):
                onnx.checker.check_model(proto)
            difference = _max_difference(proto, [check.numpy() for check in checks], expected, phases)
        except Exception as exc:  # each exporter fails in its own ways; report them all if none works
            failures.append(f"{name}: {_one_line(exc)}")
            continue
        if difference <= TOLERANCE:
            return VerifiedGraph(proto, name)
        failures.append(f"{name}: probabilities or novelty differ from torch by {difference:.2e}")
    raise ExportError(f"could not export the {what} to ONNX ({'; '.join(failures)})")


def write_graph(
    graph: VerifiedGraph, metadata: OnnxMetadata, out: Path, phases: dict[str, float] | None = None
) -> Path:
    """Write a verified graph with its ``fewshot.*`` metadata (the exporter filled in) to ``out``, atomically."""
    with _timed(phases, "metadata and writing"):
        _add_metadata(graph.proto, replace(metadata, exporter=graph.exporter))
        _write_atomically(graph.proto, out)
    return out


@contextlib.contextmanager
def _timed(phases: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the block's wall-clock seconds to ``phases[name]`` (nothing is timed without ``phases``)."""
    if phases is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


# ----------------------------------------------------------------- exporters
def trace_to_onnx(
    module: nn.Module,
    example: torch.Tensor,
    opset: int | None = None,
    input_name: str = INPUT_NAME,
    output_names: tuple[str, ...] = OUTPUT_NAMES,
) -> onnx.ModelProto:
    """TorchScript tracing (``dynamo=False``), batch dimension dynamic, refused on any ``TracerWarning`` (module
    docstring). A task's graph by default; other names for other graphs (:mod:`fewshot_sdk.export.onnx_backbone`)."""
    buffer = io.BytesIO()
    batch_axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        # torch announces that this exporter is the legacy one; it is kept here for its speed, verified like the other
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        # every Pad (EfficientNet's TensorFlow SAME padding): the tracer's exporter builds the pads with a
        # reversed Slice it cannot fold itself; onnxruntime folds them when it loads the graph
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=[input_name],
            output_names=list(output_names),
            opset_version=opset,
            dynamo=False,
            dynamic_axes=batch_axes,
            verbose=False,
        )
    return onnx.load_model_from_string(buffer.getvalue())


def _export_dynamo(module: nn.Module, example: torch.Tensor, opset: int | None) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"images": {0: batch}},
            verbose=False,
        )
    return program.model_proto


#: Tried in this order; the name of the one that wrote a file is its ``fewshot.exporter``.
EXPORTERS: list[tuple[str, Callable[[nn.Module, torch.Tensor, int | None], onnx.ModelProto]]] = [
    ("torchscript", trace_to_onnx),
    ("torch.export", _export_dynamo),
]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide what torch's exporter says about torch itself, or when it gives up.

    The op registry warns once per torchvision op when torchvision is absent (we use none); torch's
    pytree warns about its own ``LeafSpec``. When ``torch.export`` gives up (a data-dependent branch,
    say) it logs and prints the whole traced graph, while the reason travels in the exception (into
    :class:`ExportError` if no exporter succeeds), so that output is dropped; on success it is passed on.
    """
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
        sys.stdout.write(out.getvalue())
        sys.stderr.write(err.getvalue())
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


# ----------------------------------------------------------------- checks and writing
def check_destination(path: str | os.PathLike, overwrite: bool) -> Path:
    """The output path, refused early (before any adapting) if it is not a new or replaceable .onnx file."""
    out = Path(path)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"the exported file must end in .onnx, got {out}")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name ending in .onnx")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    return out


def _check_opset(opset: int | None) -> int | None:
    if opset is None:
        return None
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise InputError(f"opset must be an integer from {MIN_OPSET} to {newest}, got {opset!r}")
    return opset


def _max_difference(
    proto: onnx.ModelProto,
    batches: list[np.ndarray],
    expected: list[list[np.ndarray]],
    phases: dict[str, float] | None = None,
) -> float:
    """Largest difference from torch over batches of sizes other than the traced one.

    Probabilities are compared absolutely; novelty relative to its size (ProtoNet's is a squared
    distance, tens to thousands, computed by ONNX as |f|^2 - max(2 f.c - |c|^2), which loses digits).
    """
    import onnxruntime

    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch_dim.dim_param:
        raise ExportError(
            f"the exported batch dimension is fixed to {batch_dim.dim_value}: the method turns the batch size into "
            "a Python int (len(x), int(x.shape[0]), a loop over rows); use x.shape[0] or view(-1, ...) instead"
        )
    with _timed(phases, "onnxruntime session"):
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, (wanted, wanted_novelty) in zip(batches, expected, strict=True):
        with _timed(phases, "parity runs"):
            logits, probs, novelty = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        if probs.shape != wanted.shape or logits.shape != wanted.shape or novelty.shape != wanted_novelty.shape:
            raise ExportError(
                f"outputs have shapes {logits.shape}, {probs.shape}, {novelty.shape}; "
                f"expected {wanted.shape} and {wanted_novelty.shape}"
            )
        novelty_error = np.abs(novelty - wanted_novelty) / np.maximum(1.0, np.abs(wanted_novelty))
        worst = max(worst, float(np.abs(probs - wanted).max()), float(novelty_error.max()))
    return worst


def _add_metadata(proto: onnx.ModelProto, metadata: OnnxMetadata) -> None:
    props = {entry.key: entry.value for entry in proto.metadata_props}
    props.update(metadata.to_props())
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "fewshot-sdk"
    proto.producer_version = __version__
    proto.doc_string = f"fewshot-sdk {metadata.method} task over {len(metadata.class_names)} classes"


def _write_atomically(proto: onnx.ModelProto, out: Path) -> None:
    """Write next to ``out`` then rename: an interrupted export never leaves half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    try:
        onnx.save_model(proto, temporary, save_as_external_data=False)
        follow_umask(Path(temporary))
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _one_line(exc: BaseException) -> str:
    """The root cause's first line: torch's exporter wraps the informative error in generic ones."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(root).__name__}: {first[:300]}" if first else type(root).__name__
