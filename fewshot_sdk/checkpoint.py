"""The checkpoint format: a folder with ``weights.safetensors`` and ``config.json``.

Nothing is pickled: weights are safetensors (plain tensors, no code) and the
configuration is JSON validated by pydantic, so opening a checkpoint someone
shared cannot run their code. Every failure names the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from pydantic import Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fewshot_sdk.config import (
    BackboneConfig,
    PreprocessConfig,
    Provenance,
    StrictModel,
    describe_validation_error,
)
from fewshot_sdk.errors import CheckpointError, InputError
from fewshot_sdk.finite import all_finite
from fewshot_sdk.version import __version__

if TYPE_CHECKING:
    from torch import nn


class SavedLearner(Protocol):
    """What the format reads off a learner (``methods.base.Learner``): it knows no method."""

    method: str
    config: StrictModel
    backbone_config: BackboneConfig
    preprocess_config: PreprocessConfig
    domain: str
    storage_dtype: Literal["float32", "float16"]
    provenance: Provenance

    def state_dict(self) -> dict[str, Any]: ...


CONFIG_FILE = "config.json"
#: The ``format`` of a learner's and of a saved task's weights header.
LEARNER_FORMAT = "fewshot-sdk/learner"
TASK_FORMAT = "fewshot-sdk/task"
WEIGHTS_FILE = "weights.safetensors"


class LearnerConfig(StrictModel):
    """Everything needed to rebuild a learner's architecture, plus what is known of its weights."""

    format: Literal["fewshot-sdk/learner"] = "fewshot-sdk/learner"
    format_version: Literal[1] = 1
    sdk_version: str = __version__
    method: str
    method_config: dict[str, Any] = Field(default_factory=dict)
    backbone: BackboneConfig
    preprocess: PreprocessConfig
    storage_dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="how floating-point weights are stored on disk (float16 halves a bundled photo model); "
        "they are always computed in float32",
    )
    domain: str = Field(
        "unspecified",
        description='what the weights were trained on: "photos", "handwritten-characters", ... '
        "(inputs far from it get a warning)",
    )
    provenance: Provenance = Field(default_factory=Provenance)


def learner_config(learner: SavedLearner) -> LearnerConfig:
    return LearnerConfig(
        method=learner.method,
        method_config=learner.config.model_dump(mode="json"),
        backbone=learner.backbone_config,
        preprocess=learner.preprocess_config,
        domain=learner.domain,
        storage_dtype=learner.storage_dtype,
        provenance=learner.provenance,
    )


def prepare_output_folder(folder: str | Path, overwrite: bool, files: tuple[str, ...]) -> Path:
    """Create ``folder``; refuse to replace an existing checkpoint unless ``overwrite``."""
    path = Path(folder)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} exists and is not a folder")
        existing = [name for name in files if (path / name).exists()]
        if existing and not overwrite:
            raise InputError(
                f"{path} already holds {', '.join(existing)}; pass overwrite=True (--overwrite) to replace it"
            )
        path.mkdir(parents=True, exist_ok=True)
        probe = _temporary(path / "probe")  # a folder we cannot write into says so now, not after the work
        probe.unlink()
    except OSError as exc:  # read-only, a parent that is a file, a name too long, /proc
        raise InputError(f"cannot write into {str(path)[:200]}: {exc.strerror or exc}") from None
    return path


#: Held (created exclusively) by the one save writing into a folder; it names that writer's process.
LOCK_FILE = ".fewshot-writing"


@contextmanager
def writing_folder(folder: str | Path, overwrite: bool, files: tuple[str, ...]) -> Iterator[Path]:
    """``folder``, written by this block alone: concurrent saves into one folder never interleave or vanish.

    The block holds ``folder/.fewshot-writing`` (created exclusively). Another save meanwhile fails
    with one line; the refusal to replace ``files`` without ``overwrite`` is checked again under the
    lock, so of several saves into a new folder exactly one wins. A lock left by a killed process is
    taken over.
    """
    path = prepare_output_folder(folder, overwrite, files)
    lock = path / LOCK_FILE
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            if _lock_holder_alive(lock):
                holder = _lock_holder(lock)
                raise InputError(
                    f"{path} is being written by another save (process {holder}); retry after it"
                ) from None
            lock.unlink(missing_ok=True)  # its writer is gone: take it over
        except OSError as exc:
            raise InputError(f"cannot write into {path}: {exc.strerror or exc}") from None
    else:
        raise InputError(f"{path} is being written by another save; retry after it")
    try:
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        prepare_output_folder(path, overwrite, files)  # again, now that no one else writes here
        yield path
    finally:
        lock.unlink(missing_ok=True)


def _lock_holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text() or "0") or None
    except (OSError, ValueError):
        return None


def _lock_holder_alive(lock: Path) -> bool:
    holder = _lock_holder(lock)
    if holder is None:
        return True  # being created this instant: someone holds it
    try:
        os.kill(holder, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temporary(path: Path) -> Path:
    """A fresh file beside ``path`` for an atomic replace: a name no other writer shares."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def write_json(path: Path, model: StrictModel) -> None:
    tmp = _temporary(path)
    try:
        tmp.write_text(json.dumps(model.model_dump(mode="json"), indent=2) + "\n")
        follow_umask(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_weights(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tmp = _temporary(path)
    try:
        # safetensors wants contiguous CPU tensors that share no memory
        plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
        save_file(plain, str(tmp), metadata=metadata)
        follow_umask(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def follow_umask(path: Path) -> None:
    """Give a file the permissions a plain ``open`` would (0644 under the usual umask).

    safetensors and ``tempfile.mkstemp`` create files 0600, which makes a shared
    checkpoint or ``.onnx`` file unreadable to the other users of a machine.
    """
    mask = os.umask(0)  # reading the umask means setting it: put it back
    os.umask(mask)
    path.chmod(0o666 & ~mask)


def stored_tensors(learner: SavedLearner) -> dict[str, torch.Tensor]:
    """The state dict as written to disk: floating-point tensors in the learner's ``storage_dtype``."""
    dtype = torch.float16 if learner.storage_dtype == "float16" else torch.float32
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in learner.state_dict().items()}


#: The config fields that decide what the weights compute; provenance, domain and version may change.
ARCHITECTURE_FIELDS = {"method", "method_config", "backbone", "preprocess"}
#: Fields added to those after files carried the digest: they enter it only when not at their default, so
#: every file written before them (the bundled models among them) still matches its own config.
FIELDS_ADDED_TO_DIGEST = (("backbone", "side_levels"),)


def weights_header(config: LearnerConfig, file_format: str) -> dict[str, str]:
    """What a weights file records of the config it was written with, in its safetensors header.

    Shapes catch most swapped files, not all: two checkpoints of one backbone with other
    temperatures, metrics or input sizes hold tensors of the same shapes. The digest of the
    fields that decide the computation catches a weights file put beside another config.
    """
    architecture = config.model_dump(mode="json", include=ARCHITECTURE_FIELDS)
    for section, field in FIELDS_ADDED_TO_DIGEST:
        default = type(getattr(config, section)).model_fields[field].default
        if getattr(getattr(config, section), field) == default:
            del architecture[section][field]
    digest = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode()).hexdigest()
    return {
        "format": file_format,
        "method": config.method,
        "storage_dtype": config.storage_dtype,
        "config_sha256": digest,
    }


def check_weights_header(path: Path, config: LearnerConfig, config_path: Path, file_format: str) -> None:
    """Refuse weights written with another config than ``config_path`` holds.

    Files written before the header carried the config (the bundled models among them) have
    no ``config_sha256`` and are read as before.
    """
    try:
        with safe_open(str(path), framework="pt") as opened:
            written = opened.metadata() or {}
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); the checkpoint is corrupt") from None
    if "config_sha256" not in written:
        return
    expected = weights_header(config, file_format)
    for key, what in (("format", "a"), ("method", "a"), ("storage_dtype", "stored as")):
        if written.get(key) != expected[key]:
            raise CheckpointError(
                f"{path} is {what} {written.get(key)!r} file but {config_path} describes {expected[key]!r}: "
                "the files do not belong together; put back the config saved with these weights"
            )
    if written["config_sha256"] != expected["config_sha256"]:
        raise CheckpointError(
            f"{path} was saved with another {'/'.join(sorted(ARCHITECTURE_FIELDS))} than {config_path} holds: "
            "the files do not belong together; put back the config saved with these weights"
        )


def save_learner(learner: SavedLearner, folder: str | Path, overwrite: bool = False) -> Path:
    config = learner_config(learner)
    with writing_folder(folder, overwrite, (CONFIG_FILE, WEIGHTS_FILE)) as path:
        write_weights(path / WEIGHTS_FILE, stored_tensors(learner), weights_header(config, LEARNER_FORMAT))
        write_json(path / CONFIG_FILE, config)
    return path


#: No config.json or task.json comes near this: a larger one is refused before it is parsed.
MAX_JSON_BYTES = 16 << 20


def read_json_model(path: Path, model: type[StrictModel]) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: is {path.parent} a fewshot-sdk checkpoint folder?")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path} is {path.stat().st_size:,} bytes, far beyond any fewshot-sdk config")
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise CheckpointError(f"{path} is not valid JSON ({why}); the checkpoint is corrupt") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return model.model_validate(raw)
    except RecursionError:
        raise CheckpointError(
            f"{path} is nested too deeply to be a {model.__name__}; the checkpoint is corrupt"
        ) from None
    except ValidationError as exc:
        raise CheckpointError(f"{path} is not a valid {model.__name__}: {describe_validation_error(exc)}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint has no weights")
    try:
        return load_file(str(path))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); the checkpoint is corrupt") from None


def load_state_into(module: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """``load_state_dict`` with a one-line error that says which tensors do not fit."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    kinds = sorted(
        k for k in set(expected) & set(tensors) if expected[k].is_floating_point() != tensors[k].is_floating_point()
    )
    if kinds:
        k = kinds[0]
        raise CheckpointError(
            f"{source}: tensor {k} is {tensors[k].dtype} but the model keeps {expected[k].dtype} there"
        )
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            details.append(f"{k} is {tuple(tensors[k].shape)} but the model needs {tuple(expected[k].shape)}")
        raise CheckpointError(f"{source} does not match its config.json: {'; '.join(details)}")
    check_finite(tensors, source)
    negative = [k for k, t in tensors.items() if k.endswith("running_var") and bool((t < 0).any())]
    if negative:
        raise CheckpointError(f"{source}: batch-norm variance {negative[0]} is negative; the file is corrupt")
    module.load_state_dict(tensors, strict=True)


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding NaN or infinity."""
    return [name for name, t in tensors.items() if not all_finite(t)]


def check_finite(tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights or task state with NaN or infinity: they would only ever predict garbage."""
    broken = non_finite(tensors)
    if broken:
        raise CheckpointError(f"{source}: tensor {broken[0]} holds NaN or infinite values; the file is corrupt")
