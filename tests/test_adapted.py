import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.errors import CheckpointError, InputError


def test_saved_task_reloads_and_predicts_identically(tmp_path, image_folder):
    torch.manual_seed(0)
    task = fs.create("protonet").adapt(fs.SupportSet.from_folder(image_folder))
    folder = task.save(tmp_path / "task")
    again = fs.load_task(folder)
    assert again.class_names == task.class_names and again.method == "protonet"
    query = torch.randn(5, 1, 28, 28)
    assert torch.equal(again.predict(query).probs, task.predict(query).probs)
    with pytest.raises(InputError, match="already holds"):
        task.save(folder)


def test_corrupt_saved_task_is_refused(tmp_path, image_folder):
    task = fs.create("protonet").adapt(fs.SupportSet.from_folder(image_folder))
    folder = task.save(tmp_path / "task")
    (folder / "task.json").write_text("[]")
    with pytest.raises(CheckpointError, match="task.json is not a valid TaskConfig"):
        fs.load_task(folder)
    with pytest.raises(CheckpointError, match="saved task not found"):
        fs.load_task(tmp_path / "elsewhere")
