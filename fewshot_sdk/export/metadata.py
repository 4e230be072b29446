"""What an exported ``.onnx`` file says about itself: the ``fewshot.*`` metadata props.

To classify an *image*, a runtime needs besides the graph the class names and the exact
preprocessing (resolution, channels, normalisation). They travel inside the file as ONNX
``metadata_props`` (string pairs that Netron and onnxruntime's ``get_modelmeta()`` show), so one
file is the whole deployable model.

Format versions. Version 2 adds ``resize_shorter`` (scale the shorter side to that many pixels,
then centre-crop ``image_size``; photo models) to version 1, which stretches every image. A
version-1 reader ignores unknown keys, so it would silently *stretch* a cropping file's images and
answer confidently wrong. So a file is version 2 only when it crops: old SDKs then refuse it with
"upgrade fewshot-sdk", while every stretching file stays version 1 and keeps opening in them (its
``resize_shorter`` is JSON ``null``, which they ignore and which means what they do). Reading
accepts both; a missing key reads as ``null`` (every file written before it existed stretches).

This module imports neither torch nor onnx: the torch-free runtime reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fewshot_sdk.class_names import class_names_problem
from fewshot_sdk.errors import InputError

PREFIX = "fewshot."
FORMAT = "fewshot-sdk/onnx"
#: The newest format this SDK reads (and writes, for files that crop); see the module docstring.
FORMAT_VERSION = 2
#: What files that stretch (``resize_shorter`` None) are written as, so older SDKs still open them.
STRETCH_FORMAT_VERSION = 1
#: What files that centre-crop (``resize_shorter`` set) are written as; older SDKs refuse them.
CROP_FORMAT_VERSION = 2
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probs", "novelty")
#: How ``fewshot_sdk.data.images.Preprocessor`` resizes; recorded so other runtimes can match it.
RESIZE = "pil-bilinear"


@dataclass(frozen=True)
class OnnxMetadata:
    """The preprocessing and labels an exported task needs, as stored in its ``.onnx`` file."""

    method: str
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sdk_version: str
    exporter: str = ""
    #: None: stretch to image_size; an int: shorter side to this, then centre-crop image_size.
    resize_shorter: int | None = None
    resize: str = RESIZE
    #: The task's ``reject="auto"`` threshold on the ``novelty`` output; None: not calibrated.
    novelty_threshold: float | None = None
    #: The saved task folder this file belongs to (``task.save(..., onnx=True)``), as the digest of its
    #: task files; None: a free-standing export. See :mod:`fewshot_sdk.io.saved_tasks`.
    task_digest: str | None = None
    #: "int8" for a statically quantized graph (:mod:`fewshot_sdk.export.quantize`); None: float32.
    quantized: str | None = None
    input_name: str = INPUT_NAME
    output_names: tuple[str, ...] = OUTPUT_NAMES
    format: str = FORMAT

    @property
    def format_version(self) -> int:
        """The version this metadata is written as: 2 only when it crops (see the module docstring)."""
        return STRETCH_FORMAT_VERSION if self.resize_shorter is None else CROP_FORMAT_VERSION

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one model-ready image."""
        return (self.channels, *self.image_size)

    @classmethod
    def describing(
        cls,
        method: str,
        class_names: Sequence[str],
        preprocess: Any,
        sdk_version: str,
        exporter: str = "",
        novelty_threshold: float | None = None,
        task_digest: str | None = None,
        quantized: str | None = None,
    ) -> OnnxMetadata:
        """The metadata of a task whose learner preprocesses with ``preprocess`` (a ``PreprocessConfig``).

        Duck-typed, so this torch-free module need not import the config models.
        """
        return cls(
            method=method,
            class_names=tuple(class_names),
            image_size=tuple(preprocess.image_size),
            channels=preprocess.channels,
            mean=tuple(preprocess.mean),
            std=tuple(preprocess.std),
            resize_shorter=preprocess.resize_shorter,
            sdk_version=sdk_version,
            exporter=exporter,
            novelty_threshold=novelty_threshold,
            task_digest=task_digest,
            quantized=quantized,
        )

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries: every field and ``format_version``, each a plain string (tuples,
        numbers and None as JSON)."""
        values = {"format": self.format, "format_version": self.format_version, **asdict(self)}
        return {PREFIX + key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> OnnxMetadata:
        """Parse ``metadata_props``; one-line :class:`InputError` naming ``source`` when they are not ours."""
        ours = {key[len(PREFIX) :]: value for key, value in props.items() if key.startswith(PREFIX)}
        if not ours:
            raise InputError(
                f"{source} was not exported by fewshot-sdk (no fewshot metadata); export it with `fewshot export`"
            )
        if ours.get("format") != FORMAT:
            raise InputError(f"{source} has fewshot metadata of an unknown format {ours.get('format')!r}")
        try:
            version = int(ours["format_version"])
            if version > FORMAT_VERSION:
                raise InputError(
                    f"{source} uses fewshot ONNX format version {version}, newer than this SDK reads "
                    f"({FORMAT_VERSION}); upgrade fewshot-sdk"
                )
            image_size = tuple(int(v) for v in json.loads(ours["image_size"]))
            resize_shorter = json.loads(ours.get("resize_shorter", "null"))
            if resize_shorter is not None and (type(resize_shorter) is not int or version < CROP_FORMAT_VERSION):
                raise ValueError(f"resize_shorter {resize_shorter!r} in a version-{version} file")
            metadata = cls(
                method=ours["method"],
                class_names=tuple(str(n) for n in json.loads(ours["class_names"])),
                image_size=(image_size[0], image_size[1]),
                channels=int(ours["channels"]),
                mean=tuple(float(v) for v in json.loads(ours["mean"])),
                std=tuple(float(v) for v in json.loads(ours["std"])),
                sdk_version=ours["sdk_version"],
                exporter=ours.get("exporter", ""),
                resize_shorter=resize_shorter,
                resize=ours.get("resize", RESIZE),
                novelty_threshold=_optional_float(ours.get("novelty_threshold", "null")),
                task_digest=_optional_digest(ours.get("task_digest", "null")),
                quantized=None if ours.get("quantized", "null") == "null" else ours["quantized"],
                input_name=ours.get("input_name", INPUT_NAME),
                output_names=tuple(json.loads(ours["output_names"])) if "output_names" in ours else OUTPUT_NAMES,
            )
        except InputError:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise InputError(f"{source} has damaged fewshot metadata ({type(exc).__name__}: {exc})") from None
        metadata.check(source)
        return metadata

    def check(self, source: str) -> None:
        """Refuse metadata that cannot describe a working classifier."""
        problems = []
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            problems.append(f"image_size {self.image_size}")
        if self.channels not in (1, 3):
            problems.append(f"channels {self.channels}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                problems.append(f"{name} {getattr(self, name)}")
        if any(s <= 0 for s in self.std):
            problems.append(f"std {self.std}")
        if self.resize_shorter is not None and self.resize_shorter < 1:
            problems.append(f"resize_shorter {self.resize_shorter}")
        if len(self.class_names) < 1:
            problems.append("no class names")
        elif (names := class_names_problem(self.class_names)) is not None:
            problems.append(names)
        if self.resize != RESIZE:
            problems.append(f"resize {self.resize!r}")
        if tuple(self.output_names[:2]) != OUTPUT_NAMES[:2]:
            problems.append(f"outputs {self.output_names}")
        if self.quantized not in (None, "int8"):
            problems.append(f"quantized {self.quantized!r}")
        if self.novelty_threshold is not None and "novelty" not in self.output_names:
            problems.append("a novelty threshold without a novelty output")
        if problems:
            raise InputError(f"{source} has unusable fewshot metadata: {', '.join(problems)}")


def _optional_float(text: str) -> float | None:
    """A JSON number or null; a finite float or None."""
    value = json.loads(text)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise ValueError(f"novelty_threshold {value!r} is not a finite number")
    return float(value)


def _optional_digest(text: str) -> str | None:
    """A hex SHA-256 (written as a plain string, like the other strings) or ``null``: None."""
    if text == "null":
        return None
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"task_digest {text!r} is not a SHA-256 hex digest")
    return text
