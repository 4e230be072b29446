"""Nothing corrupt passes silently: tampered tasks and checkpoints, non-finite exports, file modes, CLI flags."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from cli_support import assert_clean_error, run
from safetensors.torch import load_file, save_file

import fewshot_sdk as fs
from fewshot_sdk.task.adapted import TASK_FILE, TASK_WEIGHTS


def adapted(ways: int = 3) -> fs.AdaptedModel:
    torch.manual_seed(ways)
    x, y = torch.randn(2 * ways, 1, 28, 28), torch.arange(ways).repeat(2)
    return fs.create("protonet").adapt(fs.SupportSet.from_tensors(x, y, class_names=[f"c{i}" for i in range(ways)]))


def test_a_saved_task_with_nan_weights_is_refused(tmp_path):
    folder = adapted().save(tmp_path / "task")
    tensors = load_file(str(folder / TASK_WEIGHTS))
    name = next(k for k in tensors if k.startswith("learner.") and tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(folder / TASK_WEIGHTS))
    with pytest.raises(fs.CheckpointError, match=rf"tensor {name[len('learner.') :]} holds NaN"):
        fs.load_task(folder)


def test_another_tasks_state_or_a_shortened_class_list_is_refused(tmp_path):
    three, four = adapted(3).save(tmp_path / "three"), adapted(4).save(tmp_path / "four")
    (three / TASK_WEIGHTS).write_bytes((four / TASK_WEIGHTS).read_bytes())  # four prototypes, three names
    with pytest.raises(fs.CheckpointError, match="names 3 classes but the task state"):
        fs.load_task(three)
    config = json.loads((four / TASK_FILE).read_text())
    config["class_names"] = config["class_names"][:2]
    (four / TASK_FILE).write_text(json.dumps(config))
    with pytest.raises(fs.CheckpointError, match="names 2 classes"):
        fs.load_task(four)


def test_a_non_finite_task_does_not_export(tmp_path):
    task = adapted()
    task.state["prototypes"][0, 0] = float("inf")
    with pytest.raises(fs.InputError, match="NaN or infinite"):
        task.export_onnx(tmp_path / "task.onnx")
    assert not (tmp_path / "task.onnx").exists()


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        task = adapted()
        checkpoint = task.learner.save(tmp_path / "model")
        saved = task.save(tmp_path / "task")
        exported = task.export_onnx(tmp_path / "task.onnx")
    finally:
        os.umask(previous)
    for path in (checkpoint / "weights.safetensors", saved / TASK_WEIGHTS, exported):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--lr", "0"], "lr: Input should be greater than 0"),
        (["--batchnorm", "sometimes"], "batchnorm"),
    ],
)
def test_bad_train_flags_are_one_line_and_leave_no_empty_output_folder(tmp_path, image_folder, flags, message):
    out = tmp_path / "out"
    assert_clean_error(run("train", "--data", image_folder, "--out", out, *flags), message)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_one_line(tmp_path, image_folder):
    assert_clean_error(
        run("train", "--data", image_folder, "--out", tmp_path / "o", "--device", "cuda"), "no usable CUDA"
    )


def test_an_onnx_file_whose_class_names_were_shortened_is_refused_with_one_line(tmp_path, examples_dir):
    import onnx

    task = adapted()
    path = task.export_onnx(tmp_path / "task.onnx")
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "fewshot.class_names":
            prop.value = json.dumps(json.loads(prop.value)[:2])
    onnx.save(model, str(path))
    query = sorted((examples_dir / "queries").glob("*.png"))[0]
    assert_clean_error(run("classify", "--model", path, "--query", query), "scores 3 classes but its metadata names 2")
