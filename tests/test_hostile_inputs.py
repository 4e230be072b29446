"""Hostile inputs and files, refused in one line where they enter: no hang, no traceback, no lost save."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import torch
from cli_support import assert_clean_error, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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


def saved_task(task, tmp_path, name="task"):
    return task.save(tmp_path / name)


def test_a_deeply_nested_or_relabelled_task_file_is_refused(task, tmp_path):
    folder = saved_task(task, tmp_path)
    config = json.loads((folder / TASK_FILE).read_text())
    (folder / TASK_FILE).write_text('{"learner": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(fs.CheckpointError, match="nested too deeply|not valid"):
        fs.load_task(folder)
    (folder / TASK_FILE).write_text(json.dumps({**config, "task": "regression"}))
    with pytest.raises(fs.CheckpointError, match="regression task but its protonet learner's tasks are classification"):
        fs.load_task(folder)


def rewrite_weights(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "task.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "task.safetensors"), metadata={"format": "fewshot-sdk/task"})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.update({k: v.round().int() for k, v in t.items() if k.endswith("0.0.weight")}), "int32"),
        (lambda t: t.update({k: -v.abs() - 1 for k, v in t.items() if k.endswith("running_var")}), "negative"),
        (lambda t: t.update({k: v * 1e30 for k, v in t.items() if k.startswith("state.")}), "beyond"),
    ],
)
def test_weights_of_the_wrong_kind_or_range_are_refused(task, tmp_path, change, match):
    folder = saved_task(task, tmp_path)
    rewrite_weights(folder, change)
    with pytest.raises(fs.CheckpointError, match=match):
        fs.load_task(folder)


def test_values_that_would_overflow_the_network_are_refused(task):
    with pytest.raises(fs.InputError, match="not normalised pixels"):
        task.predict(torch.full((1, 1, 28, 28), 1e30))
    with pytest.raises(fs.InputError, match="not normalised pixels"):
        fs.load("protonet-omniglot").adapt(fs.SupportSet.from_tensors(torch.full((2, 1, 28, 28), 1e30), [0, 1]))


def test_numpy_images_are_read_in_their_documented_dtypes_only(task):
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (28, 28))
    as_uint8 = task.predict(pixels.astype(np.uint8)).probs
    torch.testing.assert_close(task.predict(pixels.astype(np.int32)).probs, as_uint8)  # 0..255 ints: 8-bit
    for bad, match in [
        ((pixels + 300).astype(np.int32), "within 0..255"),
        (pixels.astype(np.float32), r"within \[0, 1\]"),  # 0..255 floats would be clipped to white
        (pixels.astype(np.complex64), "dtype complex64"),
        (pixels.astype(str), "dtype <U"),
        (pixels.astype(object), "dtype object"),
    ]:
        with pytest.raises(fs.InputError, match=match):
            task.predict(bad)


def test_load_checks_device_threads_and_adapt_checks_its_step_size():
    with pytest.raises(fs.InputError, match="unknown device 'bogus'"):
        fs.load("protonet-omniglot", device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(fs.InputError, match="no usable CUDA device"):
            fs.load("protonet-omniglot", device="cuda")
    for threads in ("4", -1, 1.5):
        with pytest.raises(fs.InputError, match="threads must be an integer"):
            fs.load("protonet-omniglot", threads=threads)
    support = fs.SupportSet.from_tensors(torch.randn(4, 1, 28, 28), [0, 0, 1, 1])
    with pytest.raises(fs.InputError, match="lr"):
        fs.load("maml-omniglot").adapt(support, lr=float("inf"))


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 20000}, "image_size"),
        ({"std": (1e-45,)}, "std"),
        ({"mean": (float("nan"),)}, "mean"),
    ],
)
def test_preprocessing_settings_name_themselves(settings, match):
    with pytest.raises(fs.InputError, match=match):
        fs.create("protonet", **settings)


def test_saving_where_nothing_can_be_written_says_so(task, tmp_path):
    (tmp_path / "file").write_text("")
    for target in (tmp_path / "file" / "task", "/proc/fewshot-task"):
        with pytest.raises(fs.InputError, match="cannot write into"):
            task.save(target)


def test_an_onnx_file_whose_metadata_lies_about_its_input_is_refused(task, tmp_path):
    import onnx

    path = task.export_onnx(tmp_path / "t.onnx")
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == "fewshot.image_size":
            entry.value = "[32, 32]"
    onnx.save(proto, str(path))
    with pytest.raises(fs.CheckpointError, match=r"graph takes \[B, 1, 28, 28\] but its fewshot metadata says"):
        fs.load_task(path)


def test_a_strip_photo_is_refused_before_its_resize_fills_memory():
    from PIL import Image

    with pytest.raises(fs.InputError, match="crop it"):
        fs.load("protonet-photos").preprocess([Image.new("RGB", (100000, 1))])


def test_a_malformed_lake_runs_archive_is_one_line(tmp_path):
    import zipfile

    from fewshot_sdk.data.omniglot import load_lake_runs

    archive = tmp_path / "all_runs.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("run01/class_labels.txt", "only-one-name\n")
    with pytest.raises(fs.InputError, match="class_labels.txt does not match"):
        load_lake_runs(archive)


def test_a_task_file_naming_another_method_is_one_line(task, tmp_path):
    folder = saved_task(task, tmp_path)
    config = json.loads((folder / TASK_FILE).read_text())
    config["learner"]["method"] = "no-such-method"
    (folder / TASK_FILE).write_text(json.dumps(config))
    with pytest.raises(fs.CheckpointError, match="unknown method 'no-such-method'"):
        fs.load_task(folder)


@pytest.mark.parametrize(("option", "value", "match"), [("--lr", "inf", "lr"), ("--seed", str(10**23), "seed")])
def test_training_settings_out_of_range_are_one_line(tmp_path, minimal_omniglot_dir, option, value, match):
    result = run("train", "--out", tmp_path / "out", "--data", minimal_omniglot_dir, option, value)
    assert_clean_error(result, match)


def test_a_misspelt_training_setting_lists_the_methods_settings(tmp_path, minimal_omniglot_dir):
    out = tmp_path / "out"
    result = run("train", "--out", out, "--data", minimal_omniglot_dir, "--method", "maml", "--set", "inner_steps2=3")
    assert_clean_error(result, "inner_steps2")
    assert "the settings of maml (defaults):" in result.output and "inner_steps=1" in result.output
    assert not out.exists()


# ---- thrown at random: only our two error types, or a finite answer
RANDOM = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@RANDOM
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".webp", ".tiff"]))
def test_random_bytes_as_an_image_file(task, tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        answer = task.predict(path)
    except fs.InputError:
        return
    assert torch.isfinite(answer.probs).all()


@RANDOM
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(["uint8", "uint16", "int16", "int64", "float32", "float64", "bool", "complex64"]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12),
    )
)
def test_random_arrays_as_images(task, array):
    try:
        answer = task.predict(array)
    except fs.InputError:
        return
    assert torch.isfinite(answer.probs).all()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@RANDOM
@given(
    change=st.dictionaries(
        st.sampled_from(["learner", "class_names", "state_names", "task", "novelty_threshold"]), JSON, min_size=1
    )
)
def test_random_json_in_a_task_file(task, tmp_path_factory, change):
    folder = task.save(tmp_path_factory.mktemp("random") / "task")
    config = json.loads((folder / TASK_FILE).read_text())
    (folder / TASK_FILE).write_text(json.dumps({**config, **change}))
    try:
        loaded = fs.load_task(folder)
    except fs.CheckpointError:
        return
    assert torch.isfinite(loaded.predict(torch.zeros(1, 1, 28, 28)).probs).all()


def test_weights_put_beside_another_config_are_refused(task, tmp_path):
    """Same shapes, other computation: the header's config digest catches what shapes cannot."""
    folder = saved_task(task, tmp_path)
    config = json.loads((folder / TASK_FILE).read_text())
    config["learner"]["method_config"]["temperature"] = 7.0
    (folder / TASK_FILE).write_text(json.dumps(config))
    with pytest.raises(fs.CheckpointError, match="saved with another .* than .*task.json holds"):
        fs.load_task(folder)

    learner_folder = fs.load("protonet-omniglot").save(tmp_path / "learner")
    config = json.loads((learner_folder / "config.json").read_text())
    config["preprocess"]["image_size"] = [32, 32]
    (learner_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(fs.CheckpointError, match="put back the config saved with these weights"):
        fs.load(learner_folder)
    config["preprocess"]["image_size"] = [28, 28]
    config["storage_dtype"] = "float16"
    (learner_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(fs.CheckpointError, match="stored as 'float32' file but .* describes 'float16'"):
        fs.load(learner_folder)


def test_provenance_may_change_and_older_headers_still_load(task, tmp_path):
    folder = saved_task(task, tmp_path)
    config = json.loads((folder / TASK_FILE).read_text())
    config["learner"]["provenance"]["results"] = []
    (folder / TASK_FILE).write_text(json.dumps(config))
    assert fs.load_task(folder).class_names == task.class_names
    rewrite_weights(folder, lambda tensors: None)  # a header without the config digest, as older files have
    assert fs.load_task(folder).class_names == task.class_names
