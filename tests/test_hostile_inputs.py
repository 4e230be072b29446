"""Hostile inputs and files, refused in one line where they enter: no hang, no traceback, no lost save."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import torch
from cli_support import assert_clean_error, run

import fewshot_sdk as fs
from fewshot_sdk.export.metadata import OnnxMetadata
from fewshot_sdk.task.files import TASK_FILE


@pytest.fixture(scope="module")
def task(examples_dir):
    return fs.load("protonet-omniglot").adapt(fs.SupportSet.from_folder(examples_dir / "support"))


def test_a_fifo_query_is_refused_at_once_not_read_forever(task, tmp_path, examples_dir):
    fifo = tmp_path / "query.png"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(fs.InputError, match="not a regular file"):
        task.predict(fifo)
    result = run("classify", "--model", "protonet-omniglot", "--support", examples_dir / "support", "--query", fifo)
    assert_clean_error(result, "not a regular file")
    assert time.monotonic() - start < 60


def test_an_over_long_file_name_and_a_bytes_path(task, tmp_path, examples_dir):
    with pytest.raises(fs.InputError, match="cannot read image"):
        task.predict(tmp_path / ("a" * 300 + ".png"))
    glyph = sorted((examples_dir / "queries").glob("*.png"))[0]
    by_bytes, by_path = task.predict(os.fsencode(glyph)), task.predict(glyph)
    torch.testing.assert_close(by_bytes.probs, by_path.probs)


def test_query_tensors_of_different_shapes_are_refused(task):
    with pytest.raises(fs.InputError, match="different shapes"):
        task.predict([torch.zeros(1, 28, 28), torch.zeros(1, 30, 28)])


def test_a_class_folder_that_links_to_itself_is_named_not_dropped(tmp_path, examples_dir):
    root = tmp_path / "classes"
    root.mkdir()
    for source in sorted((examples_dir / "support").iterdir()):
        (root / source.name).symlink_to(source, target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(fs.InputError, match="loop.*leads nowhere"):
        fs.SupportSet.from_folder(root)


def test_class_names_with_control_characters_are_refused():
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(fs.InputError, match="control characters"):
        fs.SupportSet.from_tensors(x, [0, 1], class_names=["cat", "\x1b[31mdog"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"novelty_threshold": float("nan")}, "novelty_threshold"),
        ({"novelty_threshold": float("inf")}, "novelty_threshold"),
        ({"class_names": ["a", "a", "b"]}, "appears twice"),
        ({"class_names": ["a", "b\nc", "d"]}, "control characters"),
    ],
)
def test_a_task_file_with_an_unusable_threshold_or_class_names_is_refused(task, tmp_path, change, match):
    folder = task.save(tmp_path / "task")
    config = json.loads((folder / TASK_FILE).read_text())
    config.update(change)
    (folder / TASK_FILE).write_text(json.dumps(config))  # json writes NaN and Infinity as Python reads them
    with pytest.raises(fs.CheckpointError, match=match):
        fs.load_task(folder)


def test_onnx_metadata_with_duplicate_class_names_is_refused(task):
    metadata = OnnxMetadata.describing("protonet", ("a", "a"), task.learner.preprocess_config, fs.__version__)
    with pytest.raises(fs.InputError, match="appears twice"):
        metadata.check("t.onnx")


def concurrent_saves(task, folder, overwrite: bool, writers: int = 12) -> tuple[int, list[BaseException]]:
    barrier = threading.Barrier(writers)
    saved, errors = [], []

    def save() -> None:
        barrier.wait()
        try:
            task.save(folder, overwrite=overwrite)
            saved.append(1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(saved), errors


def test_concurrent_saves_into_a_new_folder_exactly_one_wins(task, tmp_path):
    for round_ in range(3):
        saved, errors = concurrent_saves(task, tmp_path / f"new{round_}", overwrite=False)
        assert saved == 1, errors
        assert all(isinstance(exc, fs.InputError) for exc in errors), errors
        assert all("already holds" in str(exc) or "being written" in str(exc) for exc in errors), errors
        assert fs.load_task(tmp_path / f"new{round_}").class_names == task.class_names


def test_concurrent_overwrites_never_crash_and_leave_a_whole_task(task, tmp_path):
    folder = task.save(tmp_path / "shared")
    saved, errors = concurrent_saves(task, folder, overwrite=True)
    assert saved >= 1
    assert all(isinstance(exc, fs.InputError) and "being written" in str(exc) for exc in errors), errors
    assert fs.load_task(folder).class_names == task.class_names
    assert sorted(p.name for p in folder.iterdir()) == sorted([TASK_FILE, "task.safetensors"])  # no temporary left


def test_a_lock_left_by_a_killed_writer_is_taken_over(task, tmp_path):
    folder = task.save(tmp_path / "killed")
    (folder / ".fewshot-writing").write_text("999999999")  # no such process
    task.save(folder, overwrite=True)
    assert not (folder / ".fewshot-writing").exists()
