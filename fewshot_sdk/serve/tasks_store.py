"""Tasks as saved task folders under one folder, published atomically, shared by any number of replicas.

Layout of ``--tasks``::

    <id>                   a link to the task's current version: fs.load_task("<tasks>/<id>") reads it
    .versions/<id>.<tag>/  one version: task.json + task.safetensors (``task.save``), support.safetensors,
                           serve.json, and task.onnx once downloaded
    .locks/<id>            what writers of one task take in turn (an advisory lock, across processes)

A version is written whole into a folder of its own (``task.save``, which holds that folder's write
lock) and never changed after; it becomes the task's by replacing the link in one ``rename``. A
server killed at any instant therefore leaves every task as it was before or after the change, each
one loadable, with at most an unpublished version folder to collect. Ids are generated here, and a
request names a task only by an id of that form: no path a client sends is ever opened.

The store holds no state that another replica could miss: each request reads the link and the
version's file times, and a task is read again when they changed (a change by another process).
The tasks it loads share the one learner the server loaded, when they were made with it.

``support.safetensors`` keeps the model-ready support images, so that growing or shrinking a task
calibrates its "none of these" threshold again (``task.save`` records it; the SDK keeps support
images in memory only); ``serve.json`` the per-class image counts and times.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from fewshot_sdk.api import SupportSet
from fewshot_sdk.checkpoint import learner_config, read_json_model, read_weights, stored_tensors, write_json
from fewshot_sdk.checkpoint import write_weights as write_tensors
from fewshot_sdk.config import StrictModel
from fewshot_sdk.errors import CheckpointError, FewShotError, InputError
from fewshot_sdk.io.saved_tasks import load_task
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.serve.errors import Busy, UnknownTask
from fewshot_sdk.serve.uploads import check_class_names
from fewshot_sdk.task.adapted import AdaptedModel, TaskSupport
from fewshot_sdk.task.files import TASK_FILE, TASK_ONNX, TASK_WEIGHTS, TaskConfig, task_digest

VERSIONS = ".versions"
LOCKS = ".locks"
SUPPORT_FILE = "support.safetensors"
RECORD_FILE = "serve.json"
SUPPORT_FORMAT = "fewshot-sdk/serve-support"
ID = re.compile(r"[0-9a-f]{16}")
VERSION = re.compile(r"([0-9a-f]{16})\.[0-9a-f]{12}")
#: How long a writer waits for another one changing the same task before answering 409.
LOCK_WAIT_S = 30.0
#: Unpublished versions older than this are a killed writer's: removed when a store opens the folder.
ORPHAN_AGE_S = 600.0


class TaskRecord(StrictModel):
    """``serve.json``: what the service knows of a task besides the saved task itself."""

    format: Literal["fewshot-sdk/serve-task"] = "fewshot-sdk/serve-task"
    model: str
    counts: dict[str, int] = Field(description="support images per class, in the task's class order")
    created: float
    updated: float
    adapt_options: dict[str, Any] = Field(
        default_factory=dict, description='adapt\'s options the task was made with, e.g. {"finetune": "auto"}'
    )


@dataclass(frozen=True)
class TaskInfo:
    """What ``GET /tasks/{id}`` shows."""

    id: str
    classes: tuple[str, ...]
    counts: dict[str, int] | None
    method: str
    threshold: float | None
    model: str | None
    created: float | None
    updated: float | None
    adapt_options: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        counts = self.counts or {}
        return {
            "id": self.id,
            "classes": [{"name": name, "count": counts.get(name)} for name in self.classes],
            "method": self.method,
            "threshold": self.threshold,
            "model": self.model,
            "created": self.created,
            "updated": self.updated,
            "adapt_options": self.adapt_options or {},
        }


@dataclass
class Entry:
    """One task as this process last read it: ``key`` says whether the files changed since."""

    key: tuple[Any, ...]
    version: Path
    info: TaskInfo
    task: AdaptedModel | None = None


class TaskStore:
    """The tasks under ``root``, adapted with ``learner`` (``model``: its name, recorded with each task)."""

    def __init__(self, root: str | os.PathLike, learner: Learner, model: str) -> None:
        self.root = Path(root)
        self.learner = learner
        self.model = model
        try:
            for folder in (self.root, self.root / VERSIONS, self.root / LOCKS):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot use {self.root} as the tasks folder: {exc.strerror or exc}") from None
        self._reference: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
        self._cache: dict[str, Entry] = {}
        self._guard = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.collect_orphans()

    # ------------------------------------------------------------------ reading
    def ids(self) -> list[str]:
        """The tasks' ids (the links named by an id; anything else in the folder is not a task)."""
        return sorted(entry.name for entry in os.scandir(self.root) if ID.fullmatch(entry.name) and entry.is_symlink())

    def list(self) -> list[TaskInfo]:
        """Every task that can be read now (one removed meanwhile, by another replica, is left out)."""
        infos = []
        for task_id in self.ids():
            with contextlib.suppress(UnknownTask):
                infos.append(self.info(task_id))
        return sorted(infos, key=lambda info: (info.created or 0.0, info.id))

    def info(self, task_id: str) -> TaskInfo:
        return self._entry(task_id, with_task=False).info

    def task(self, task_id: str) -> AdaptedModel:
        """The task for predictions: read again only when its files changed."""
        task = self._entry(task_id, with_task=True).task
        assert task is not None
        return task

    def onnx_file(self, task_id: str) -> Path:
        """The task's ``task.onnx``, exported into its version folder on first request (atomically)."""
        entry = self._entry(task_id, with_task=True)
        out = entry.version / TASK_ONNX
        with self._loading_lock(task_id):
            if not self._onnx_belongs(out, entry.version):
                assert entry.task is not None
                entry.task.write_onnx_into(entry.version)
        return out

    # ------------------------------------------------------------------ writing
    def create(self, classes: Mapping[str, Sequence[object]], **options: Any) -> TaskInfo:
        """A new task adapted on ``classes`` ({name: [images]}, two classes or more) with ``adapt``'s ``options``
        (e.g. ``finetune="auto"``); a change of its classes later adapts with them again."""
        check_class_names(classes)
        task = self.learner.adapt(SupportSet.from_mapping(classes), **options)
        task_id = secrets.token_hex(8)
        now = time.time()
        counts = {name: len(images) for name, images in classes.items()}
        record = TaskRecord(model=self.model, counts=counts, created=now, updated=now, adapt_options=options)
        version = self._write_version(task_id, task, record)
        self._publish(task_id, version, replacing=None)
        return self._remember(task_id, version, task)

    def add_classes(self, task_id: str, classes: Mapping[str, Sequence[object]]) -> TaskInfo:
        check_class_names(classes)
        with self._writing(task_id) as (base, task, record):
            grown = task.add_classes(dict(classes))
            counts = {**record.counts, **{name: len(images) for name, images in classes.items()}}
            return self._replace(
                task_id, base, grown, record.model_copy(update={"counts": counts, "updated": time.time()})
            )

    def remove_classes(self, task_id: str, names: Sequence[str]) -> TaskInfo:
        with self._writing(task_id) as (base, task, record):
            shrunk = task.remove_classes(list(names))
            counts = {name: count for name, count in record.counts.items() if name in shrunk.class_names}
            return self._replace(
                task_id, base, shrunk, record.model_copy(update={"counts": counts, "updated": time.time()})
            )

    def delete(self, task_id: str) -> None:
        with self._task_lock(task_id):
            version = self._version(task_id)
            (self.root / task_id).unlink()
            _sync_folder(self.root)
            shutil.rmtree(version, ignore_errors=True)
        with self._guard:
            self._cache.pop(task_id, None)
        with contextlib.suppress(OSError):
            (self.root / LOCKS / task_id).unlink()

    def collect_orphans(self) -> None:
        """Remove what killed writers left: unpublished versions and link files, once old enough to be no one's."""
        published = set()
        for task_id in self.ids():
            with contextlib.suppress(FewShotError, OSError):
                published.add(self._version(task_id).name)
        cutoff = time.time() - ORPHAN_AGE_S
        for entry in os.scandir(self.root / VERSIONS):
            with contextlib.suppress(OSError):
                if entry.name not in published and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
        for entry in os.scandir(self.root):
            with contextlib.suppress(OSError):
                if entry.name.endswith(".link") and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)

    # ------------------------------------------------------------------ internals
    def _version(self, task_id: str) -> Path:
        """The folder of the task's current version; only a generated id is looked up, only inside the folder."""
        if not isinstance(task_id, str) or not ID.fullmatch(task_id):
            raise UnknownTask(f"no task {task_id!r}: task ids are 16 hex digits (GET /tasks lists them)")
        try:
            target = os.readlink(self.root / task_id)
        except OSError:
            raise UnknownTask(f"no task {task_id}: deleted, or never made here (GET /tasks lists them)") from None
        parent, _, name = target.partition("/")
        match = VERSION.fullmatch(name)
        if parent != VERSIONS or match is None or match.group(1) != task_id:
            raise CheckpointError(
                f"{self.root / task_id} links to {target!r}, not to one of its versions in {VERSIONS}/: remove the link"
            )
        return self.root / VERSIONS / name

    def _key(self, version: Path) -> tuple[Any, ...]:
        try:
            stats = [(version / name).stat() for name in (TASK_FILE, TASK_WEIGHTS)]
        except OSError as exc:
            raise CheckpointError(f"cannot read the task in {version}: {exc.strerror or exc}") from None
        return (version.name, *((s.st_mtime_ns, s.st_size) for s in stats))

    def _entry(self, task_id: str, with_task: bool) -> Entry:
        for attempt in range(3):
            try:
                version = self._version(task_id)
            except UnknownTask:
                with self._guard:
                    self._cache.pop(task_id, None)  # deleted, maybe by another replica: forget it here too
                raise
            try:
                key = self._key(version)
                with self._guard:
                    entry = self._cache.get(task_id)
                if entry is not None and entry.key == key and (entry.task is not None or not with_task):
                    return entry
                with self._loading_lock(task_id):  # one read of a task at a time in this process
                    with self._guard:
                        entry = self._cache.get(task_id)
                    if entry is None or entry.key != key or (entry.task is None and with_task):
                        entry = self._read(task_id, version, key, with_task)
                        with self._guard:
                            self._cache[task_id] = entry
                return entry
            except (FewShotError, OSError):
                # a writer (here or in another replica) replaced the version while it was read: read the new one
                if attempt < 2 and self._current_name(task_id) != version.name:
                    continue
                raise
        raise AssertionError("unreachable")

    def _current_name(self, task_id: str) -> str | None:
        try:
            return Path(os.readlink(self.root / task_id)).name
        except OSError:
            return None

    def _read(self, task_id: str, version: Path, key: tuple[Any, ...], with_task: bool) -> Entry:
        config: TaskConfig = read_json_model(version / TASK_FILE, TaskConfig)
        record = self._record(version)
        info = TaskInfo(
            id=task_id,
            classes=tuple(config.class_names),
            counts=record.counts if record else None,
            method=config.learner.method,
            threshold=config.novelty_threshold,
            model=record.model if record else None,
            created=record.created if record else None,
            updated=record.updated if record else None,
            adapt_options=record.adapt_options if record else None,
        )
        task = self._load(version, config) if with_task else None
        return Entry(key, version, info, task)

    def _record(self, version: Path) -> TaskRecord | None:
        if not (version / RECORD_FILE).exists():
            return None  # a task folder saved by the SDK and linked in by hand
        return read_json_model(version / RECORD_FILE, TaskRecord)

    def _load(
        self, version: Path, config: TaskConfig, with_support: bool = False, options: dict[str, Any] | None = None
    ) -> AdaptedModel:
        """The saved task (``fs.load_task``'s checks), on the server's learner when it was made with it;
        ``with_support``: with its support images and the ``options`` it was adapted with."""
        loaded = load_task(version)
        assert isinstance(loaded, AdaptedModel)
        learner = self.learner if self._same_learner(loaded.learner) else loaded.learner
        support = self._support(version, loaded, options or {}) if with_support else None
        if learner is loaded.learner and support is None:
            return loaded
        return AdaptedModel(
            learner,
            loaded.state,
            loaded.class_names,
            loaded.task,
            support=support,
            novelty_threshold=config.novelty_threshold,
        )

    def _same_learner(self, other: object) -> bool:
        """Whether a task's stored learner is the server's (same config, same stored weights)."""
        if self._reference is None:
            self._reference = (learner_config(self.learner).model_dump(), stored_tensors(self.learner))
        config, tensors = self._reference
        if learner_config(other).model_dump() != config:  # type: ignore[arg-type]
            return False
        theirs = stored_tensors(other)  # type: ignore[arg-type]
        return theirs.keys() == tensors.keys() and all(torch.equal(theirs[k], tensors[k]) for k in tensors)

    def _support(self, version: Path, task: AdaptedModel, options: dict[str, Any]) -> TaskSupport | None:
        path = version / SUPPORT_FILE
        if not path.exists():
            return None  # grown without it, the task records no threshold: the SDK's rule
        tensors = read_weights(path)
        x, y = tensors.get("x"), tensors.get("y")
        shape = tuple(task.learner.preprocess_config.input_shape)
        if (
            x is None
            or y is None
            or x.ndim != 4
            or tuple(x.shape[1:]) != shape
            or y.dtype != torch.long
            or y.shape != (len(x),)
            or not bool(torch.isfinite(x).all())
            or sorted(set(y.tolist())) != list(range(task.num_classes))
        ):
            raise CheckpointError(f"{path} does not hold the support images of the task beside it; the file is corrupt")
        try:
            parsed = task.learner.adapt_options(options)  # type: ignore[attr-defined]
        except InputError as exc:
            raise CheckpointError(f"{version / RECORD_FILE} records options the model refuses ({exc})") from None
        return TaskSupport(x, y, parsed)

    @contextlib.contextmanager
    def _writing(self, task_id: str) -> Iterator[tuple[Path, AdaptedModel, TaskRecord]]:
        """The task's current version, read with its support images, while this writer alone changes it."""
        with self._task_lock(task_id):
            base = self._version(task_id)
            config: TaskConfig = read_json_model(base / TASK_FILE, TaskConfig)
            record = self._record(base) or TaskRecord(
                model=self.model, counts={}, created=time.time(), updated=time.time()
            )
            task = self._load(base, config, with_support=True, options=record.adapt_options)
            yield base, task, record

    def _replace(self, task_id: str, base: Path, task: AdaptedModel, record: TaskRecord) -> TaskInfo:
        version = self._write_version(task_id, task, record)
        self._publish(task_id, version, replacing=base)
        return self._remember(task_id, version, task)

    def _remember(self, task_id: str, version: Path, task: AdaptedModel) -> TaskInfo:
        """Cache the task just published as it is in memory: this process's next predictions need not read it."""
        entry = self._read(task_id, version, self._key(version), with_task=False)
        entry.task = AdaptedModel(
            task.learner,
            task.state,
            task.class_names,
            task.task,
            novelty_threshold=entry.info.threshold,  # as recorded; the support images stay on disk
            network=task.network,
        )
        with self._guard:
            self._cache[task_id] = entry
        return entry.info

    def _write_version(self, task_id: str, task: AdaptedModel, record: TaskRecord) -> Path:
        """A complete new version folder, not yet the task's."""
        version = self.root / VERSIONS / f"{task_id}.{secrets.token_hex(6)}"
        try:
            task.save(version)
            if task.support is not None:
                support = {"x": task.support.x, "y": task.support.y}
                write_tensors(version / SUPPORT_FILE, support, {"format": SUPPORT_FORMAT})
            write_json(version / RECORD_FILE, record)
            for name in (TASK_FILE, TASK_WEIGHTS, SUPPORT_FILE, RECORD_FILE):
                _sync_file(version / name)
            _sync_folder(version)
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        return version

    def _publish(self, task_id: str, version: Path, replacing: Path | None) -> None:
        """Make ``version`` the task's in one rename of its link; then drop the version it replaced."""
        link = self.root / task_id
        if replacing is not None and self._current_name(task_id) != replacing.name:
            shutil.rmtree(version, ignore_errors=True)
            raise Busy(f"task {task_id} was changed by another request meanwhile; retry")
        staging = self.root / f".{version.name}.link"
        try:
            os.symlink(f"{VERSIONS}/{version.name}", staging)
            os.replace(staging, link)
            _sync_folder(self.root)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            shutil.rmtree(version, ignore_errors=True)
            raise CheckpointError(f"cannot publish task {task_id} in {self.root}: {exc.strerror or exc}") from None
        if replacing is not None:
            shutil.rmtree(replacing, ignore_errors=True)  # a reader still in it finds the new version and reads again

    @contextlib.contextmanager
    def _task_lock(self, task_id: str) -> Iterator[None]:
        """One writer per task at a time, across threads and processes (``flock`` on a file per task)."""
        self._version(task_id)  # an unknown id makes no lock file
        handle = os.open(self.root / LOCKS / task_id, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise Busy(f"task {task_id} is being changed by another request; retry") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(handle)  # releases the lock

    def _loading_lock(self, task_id: str) -> threading.Lock:
        with self._guard:
            return self._loading.setdefault(task_id, threading.Lock())

    def _onnx_belongs(self, out: Path, version: Path) -> bool:
        """Whether ``out`` exists and was exported from the task files beside it (its ``fewshot.task_digest``)."""
        if not out.is_file():
            return False
        import onnx  # only when a task's ONNX file is asked for

        from fewshot_sdk.export.metadata import OnnxMetadata

        try:
            props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
            return OnnxMetadata.from_props(props, str(out)).task_digest == task_digest(version)
        except Exception:  # unreadable in any way (protobuf's errors included): export it again
            return False


def _sync_file(path: Path) -> None:
    """Flush a file to disk before it is published: a power cut then leaves it whole, not only a kill."""
    if not path.exists():
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _sync_folder(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
