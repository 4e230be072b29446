"""Running an exported task with onnxruntime, numpy and pillow alone (no torch).

:class:`OnnxClassifier` opens a ``.onnx`` file written by ``fewshot export`` / ``task.export_onnx``,
reads its ``fewshot.*`` metadata (class names, preprocessing), turns images into the batch
``task.preprocess`` gives (the same torch-free :func:`fewshot_sdk.imageio.to_model_pixels`, then the
same float32 normalisation, in numpy) and returns each class's probability. ``classify(images,
reject="auto")`` also answers ``None`` for queries whose ``novelty`` output is above the threshold
recorded in the file (files exported before the novelty output existed cannot reject).

Execution provider: CUDA when onnxruntime lists it *and* it can really run here (a GPU behind the
driver, and the CUDA libraries the provider links against), else CPU. Asking first means a CPU-only
machine never sees onnxruntime's "Failed to create CUDAExecutionProvider" warning, without silencing
anything.

Nothing here imports torch (nor ``fewshot_sdk.data``, which does).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from fewshot_sdk.errors import InputError
from fewshot_sdk.export.metadata import OnnxMetadata
from fewshot_sdk.imageio import ImageLike, load_image, to_model_pixels
from fewshot_sdk.predict_options import Reject, check_batch_size, resolve_threshold

ImageInput = ImageLike
T = TypeVar("T")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers() -> list[str]:
    """``[CUDA, CPU]`` when the CUDA provider is listed and usable on this machine, else ``[CPU]``."""
    import onnxruntime

    if CUDA in onnxruntime.get_available_providers() and cuda_usable():
        return [CUDA, CPU]
    return [CPU]


@functools.cache
def cuda_usable() -> bool:
    """Whether onnxruntime's CUDA provider can start here, checked without asking it to (no warnings).

    Three things must hold: the driver sees at least one GPU (``cuInit`` and
    ``cuDeviceGetCount`` through ``libcuda``), the provider library loads (its
    CUDA runtime and cuBLAS dependencies resolve), and cuDNN 9 loads. CUDA
    libraries installed as pip wheels are found once ``onnxruntime.preload_dlls()``
    (or a CUDA build of torch) has loaded them, before the first call here.
    """
    if sys.platform not in ("linux", "win32"):
        return False
    windows = sys.platform == "win32"
    try:
        driver = ctypes.CDLL("nvcuda.dll" if windows else "libcuda.so.1")
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return False
        import onnxruntime

        provider = "onnxruntime_providers_cuda.dll" if windows else "libonnxruntime_providers_cuda.so"
        ctypes.CDLL(str(Path(onnxruntime.__file__).parent / "capi" / provider))
        ctypes.CDLL("cudnn64_9.dll" if windows else "libcudnn.so.9")
    except (OSError, AttributeError):
        return False
    return True


def image_to_array(image: Image.Image, metadata: OnnxMetadata) -> np.ndarray:
    """One image -> [C, H, W] float32, equal to ``Preprocessor.image_to_tensor`` (same pixels, same float32 math)."""
    array = to_model_pixels(image, metadata.channels, metadata.image_size, metadata.resize_shorter)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    mean = np.asarray(metadata.mean, dtype=np.float32).reshape(-1, 1, 1)  # 1 or C entries: both broadcast
    std = np.asarray(metadata.std, dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((array - mean) / std, dtype=np.float32)


def image_list(images: Sequence[ImageInput] | ImageInput) -> list[ImageInput]:
    """One image (a path, PIL image or array) or a sequence of them, as a non-empty list."""
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) else list(images)
    if not items:
        raise InputError("no images given")
    return items


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``, made one at a time."""
    return (items[i : i + size] for i in range(0, len(items), size))


def preprocess(images: Sequence[ImageInput] | ImageInput, metadata: OnnxMetadata) -> np.ndarray:
    """A model-ready batch [B, C, H, W] float32 from paths, PIL images or arrays."""
    return np.stack([image_to_array(load_image(item), metadata) for item in image_list(images)])


@dataclass(frozen=True)
class OnnxAnswer:
    """``OnnxClassifier.classify``'s result: per query a class name (None: rejected), probabilities, novelty."""

    class_names: list[str | None]
    probs: np.ndarray
    novelty: np.ndarray | None
    threshold: float | None


class OnnxClassifier:
    """An exported task opened with onnxruntime: images in, class probabilities out."""

    def __init__(self, model_path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        """``providers``: default :func:`choose_providers`; ``threads``: intra-op threads (0: onnxruntime's default)."""
        import onnxruntime

        path = Path(model_path)
        if not path.exists():
            raise InputError(f"ONNX model not found: {path}")
        if not path.is_file():
            raise InputError(f"expected an .onnx file but {path} is a folder")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=list(providers) if providers else choose_providers()
            )
        except Exception as exc:  # onnxruntime raises its own pybind types for bad protobufs and graphs
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot load ONNX model {path}: {reason}") from None
        self.path = path
        self.metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        inputs = [node.name for node in self.session.get_inputs()]
        outputs = [node.name for node in self.session.get_outputs()]
        if inputs != [self.metadata.input_name] or not set(self.metadata.output_names) <= set(outputs):
            raise InputError(f"{path} has inputs {inputs} and outputs {outputs}, not what its fewshot metadata says")
        graph_shape = list(self.session.get_inputs()[0].shape)[1:]  # [C, H, W] as the graph fixes them
        if len(graph_shape) != 3 or any(
            isinstance(dim, int) and dim != want
            for dim, want in zip(graph_shape, self.metadata.input_shape, strict=True)
        ):
            raise InputError(
                f"{path}: its graph takes [B, {', '.join(map(str, graph_shape))}] but its fewshot metadata says "
                f"{list(self.metadata.input_shape)} (channels, height, width): the file was edited; export it again"
            )
        # fixed by the file, so worked out once here rather than on every batch
        self._input_shape = self.metadata.input_shape
        self._output_names = ["logits", "probs"] + (["novelty"] if self.has_novelty else [])

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.class_names)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually runs on."""
        return self.session.get_providers()

    def preprocess(self, images: Sequence[ImageInput] | ImageInput) -> np.ndarray:
        """The exact batch ``task.preprocess(images)`` gives, as numpy."""
        return preprocess(images, self.metadata)  # type: ignore[arg-type]

    @property
    def has_novelty(self) -> bool:
        return "novelty" in self.metadata.output_names

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, probs)`` [B, N] for a model-ready float32 batch [B, C, H, W]."""
        return self.outputs(batch)[:2]  # type: ignore[return-value]

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(logits, probs)`` and, where the file has it, ``novelty`` [B], for a model-ready batch."""
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        expected = self._input_shape
        if batch.ndim != 4 or batch.shape[1:] != expected or len(batch) == 0:
            dims = ", ".join(map(str, expected))
            raise InputError(f"the batch has shape {batch.shape} but the model takes [B, {dims}]")
        if batch.dtype.kind != "f" or not np.isfinite(batch).all():  # kind "f": every numpy floating type
            raise InputError("the batch must be finite floating-point values")
        feed = {self.metadata.input_name: batch.astype(np.float32, copy=False)}
        outputs = self.session.run(self._output_names, feed)
        probs = outputs[1]
        named = len(self.metadata.class_names)
        if probs.ndim != 2 or probs.shape[1] != named:
            raise InputError(
                f"{self.path} scores {probs.shape[-1]} classes but its metadata names {named}: "
                "the file was altered; export the task again"
            )
        if not np.isfinite(probs).all():
            raise InputError(f"{self.path} produced NaN or infinite probabilities: its weights are corrupt")
        return tuple(outputs)

    def threshold(self, reject: Reject, where: str = "classifier.metadata.novelty_threshold") -> float | None:
        """The novelty threshold ``reject`` asks for: None, the file's calibrated one ("auto"), or a number.

        ``where``: how the caller's user reads the calibrated threshold, named when ``reject`` is refused.
        """
        if reject is not None and not self.has_novelty:
            raise InputError(f"{self.path} has no novelty output (exported by an older fewshot-sdk): export it again")
        return resolve_threshold(reject, self.recorded_threshold, where)

    def recorded_threshold(self) -> float:
        """The file's calibrated ``reject="auto"`` threshold; one-line error when it records none."""
        if self.metadata.novelty_threshold is None:
            raise InputError(
                f"{self.path} records no calibrated threshold (its task was not calibrated when exported); "
                "pass a number"
            )
        return self.metadata.novelty_threshold

    def outputs_in_chunks(self, batches: Iterable[np.ndarray]) -> tuple[np.ndarray, ...]:
        """:meth:`outputs` of each model-ready batch, joined: ``(logits, probs[, novelty])`` over all of them.

        ``batches`` is consumed lazily, so images can be decoded one chunk at a time. One batch is returned
        as onnxruntime gave it, without a copy.
        """
        chunks = [self.outputs(batch) for batch in batches]
        if len(chunks) == 1:
            return chunks[0]
        return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))

    def classify(
        self, images: Sequence[ImageInput] | ImageInput, reject: float | str | None = None, batch_size: int = 256
    ) -> OnnxAnswer:
        """Each query's class name (None where its novelty is above the threshold), probabilities and novelty."""
        threshold, size = self.threshold(reject), check_batch_size(batch_size)
        outputs = self.outputs_in_chunks(self.preprocess(chunk) for chunk in chunks(image_list(images), size))
        probs = outputs[1]
        novelty = outputs[2] if self.has_novelty else None
        names: list[str | None] = [self.metadata.class_names[i] for i in probs.argmax(1)]
        if threshold is not None and novelty is not None:
            names = [None if score > threshold else name for name, score in zip(names, novelty, strict=True)]
        return OnnxAnswer(names, probs, novelty, threshold)

    def predict_proba(self, images: Sequence[ImageInput] | ImageInput, batch_size: int = 256) -> np.ndarray:
        """Every class's probability [B, N] for images, in chunks of ``batch_size``."""
        return self.classify(images, batch_size=batch_size).probs

    def __repr__(self) -> str:
        return f"OnnxClassifier({str(self.path)!r}, method={self.metadata.method!r}, classes={self.class_names})"


def classify_with_onnx(model_path: str | os.PathLike, queries: Sequence[ImageInput]) -> tuple[list[str], np.ndarray]:
    """Class names and probabilities [B, N] of the query images under an exported task."""
    classifier = OnnxClassifier(model_path)
    return classifier.class_names, classifier.predict_proba(queries)
