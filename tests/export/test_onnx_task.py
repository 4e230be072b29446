"""A saved or exported task run by onnxruntime through the torch task's API (``fs.load_task(..., runtime=)``)."""

from __future__ import annotations

import onnx
import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.errors import CheckpointError, InputError
from fewshot_sdk.io.onnx_task import OnnxTask

#: One metric method (the TorchScript exporter), one gradient method and one memory method (torch.export).
MODELS = ["protonet-omniglot", "maml-omniglot", "mann-omniglot"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=MODELS)
def saved(request, examples_dir, tmp_path_factory):
    """A bundled model adapted to the example glyphs, saved with its task.onnx."""
    task = fs.load(request.param).adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    folder = task.save(tmp_path_factory.mktemp(request.param) / "task", onnx=True)
    return task, folder


def queries(examples_dir) -> list:
    return sorted((examples_dir / "queries").glob("*.png"))


def assert_same_answers(expected: fs.Prediction, got: fs.Prediction) -> None:
    assert got.classes == expected.classes
    assert (got.probs - expected.probs).abs().max() <= TOLERANCE
    scale = expected.novelty.abs().clamp_min(1.0)
    assert ((got.novelty - expected.novelty).abs() / scale).max() <= TOLERANCE
    if expected.threshold is None:
        assert got.threshold is None
    else:
        assert got.threshold == pytest.approx(expected.threshold)
    top2 = expected.probs.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 1e-3  # argmax is only meaningful away from ties
    assert torch.equal(got.indices[clear], expected.indices[clear])
    assert [n for n, c in zip(got.class_names, clear.tolist(), strict=True) if c] == [
        n for n, c in zip(expected.class_names, clear.tolist(), strict=True) if c
    ]


def test_the_onnxruntime_task_answers_like_the_torch_task(saved, examples_dir):
    task, folder = saved
    deployed = fs.load_task(folder, runtime="onnxruntime", threads=1)
    assert isinstance(deployed, OnnxTask) and deployed.runtime == "onnxruntime"
    assert (deployed.method, deployed.class_names, deployed.num_classes) == (task.method, task.class_names, 3)
    assert deployed.novelty_threshold == pytest.approx(task.novelty_threshold)
    images = queries(examples_dir)
    assert_same_answers(task.predict(images, reject="auto"), deployed.predict(images, reject="auto"))
    assert torch.equal(deployed.preprocess(images), task.preprocess(images))
    batch = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert_same_answers(task.predict(batch, reject=5.0), deployed.predict(batch, reject=5.0))
    # chunks, a list of tensors and one [C, H, W] tensor give the same answers as one batch
    whole = deployed.predict(batch)
    assert torch.equal(deployed.predict(batch, batch_size=3).probs, whole.probs)
    assert torch.equal(deployed.predict(list(batch)).probs, whole.probs)
    assert torch.equal(deployed.predict(batch[0]).probs, whole.probs[:1])
    assert deployed.predict(images, batch_size=2).class_names == deployed.predict(images).class_names


def test_an_onnx_file_opens_as_a_task_by_itself(saved, examples_dir):
    task, folder = saved
    deployed = fs.load_task(folder / "task.onnx")  # runtime follows the suffix
    assert isinstance(deployed, OnnxTask) and deployed.class_names == task.class_names
    images = queries(examples_dir)
    assert_same_answers(task.predict(images), deployed.predict(images))


def test_bad_queries_and_options_are_one_line(saved):
    _, folder = saved
    deployed = fs.load_task(folder, runtime="onnxruntime")
    with pytest.raises(InputError, match=r"takes \[B, 1, 28, 28\]"):
        deployed.predict(torch.zeros(2, 3, 28, 28))
    with pytest.raises(InputError, match="finite floating-point"):
        deployed.predict(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(InputError, match="no query images given"):
        deployed.predict([])
    with pytest.raises(InputError, match="cannot predict on a dict"):
        deployed.predict({"a": 1})
    with pytest.raises(InputError, match="reject must be None, 'auto' or a finite.*task.novelty_threshold"):
        deployed.predict(torch.zeros(1, 1, 28, 28), reject="often")
    with pytest.raises(InputError, match="batch_size must be a whole number >= 1, got 0"):
        deployed.predict(torch.zeros(1, 1, 28, 28), batch_size=0)


def small_task(seed: int) -> fs.AdaptedModel:
    torch.manual_seed(seed)
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    return fs.create("protonet").adapt(fs.SupportSet.from_tensors(x, y, ["a", "b", "c"]))


def test_a_folder_without_task_onnx_is_exported_into_only_when_asked(tmp_path):
    task = small_task(0)
    folder = task.save(tmp_path / "task")
    with pytest.raises(CheckpointError, match=r"has no task\.onnx for runtime='onnxruntime'.*export=True"):
        fs.load_task(folder, runtime="onnxruntime")
    assert sorted(p.name for p in folder.iterdir()) == ["task.json", "task.safetensors"]
    deployed = fs.load_task(folder, runtime="onnxruntime", export=True)
    assert (folder / "task.onnx").is_file()
    query = torch.randn(4, 1, 28, 28)
    assert (deployed.predict(query).probs - task.predict(query).probs).abs().max() <= TOLERANCE
    with pytest.raises(InputError, match="export=True writes a folder's task.onnx for runtime='onnxruntime'"):
        fs.load_task(folder, export=True)


def test_a_task_onnx_that_does_not_belong_to_its_folder_is_refused_and_never_overwritten(tmp_path):
    folder = small_task(0).save(tmp_path / "task", onnx=True)
    with pytest.raises(InputError, match=r"already holds task\.json, task\.safetensors, task\.onnx"):
        small_task(1).save(folder, onnx=True)
    small_task(1).save(folder, overwrite=True)  # another task over the files, its old task.onnx left behind
    stale = (folder / "task.onnx").read_bytes()
    for export in (False, True):
        with pytest.raises(CheckpointError, match=r"task\.onnx was not exported from the task files beside it"):
            fs.load_task(folder, runtime="onnxruntime", export=export)
    assert (folder / "task.onnx").read_bytes() == stale
    assert isinstance(fs.load_task(folder / "task.onnx"), OnnxTask)  # the file itself still opens, on request
    small_task(1).save(folder, overwrite=True, onnx=True)
    assert fs.load_task(folder, runtime="onnxruntime").class_names == ("a", "b", "c")


def test_a_task_that_cannot_export_saves_nothing(tmp_path):
    task = small_task(0)
    regression = fs.AdaptedModel(task.learner, task.state, ["value"], task="regression")
    with pytest.raises(InputError, match="only classification tasks export"):
        regression.save(tmp_path / "task", onnx=True)
    assert not (tmp_path / "task").exists()


def test_paths_that_are_no_task_are_one_line(tmp_path):
    folder = small_task(0).save(tmp_path / "task", onnx=True)
    with pytest.raises(CheckpointError, match="saved task not found: .* does not exist"):
        fs.load_task(tmp_path / "missing.onnx")
    with pytest.raises(CheckpointError, match="saved task not found"):
        fs.load_task(tmp_path / "missing", runtime="onnxruntime")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"task\.json is missing"):
        fs.load_task(tmp_path / "empty", runtime="onnxruntime")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_text("not a protobuf")
    with pytest.raises(CheckpointError, match=r"cannot load ONNX model .*corrupt\.onnx"):
        fs.load_task(corrupt)
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 1, 28, 28]) for n in "xy"]
    graph = onnx.helper.make_graph([node], "g", info[:1], info[1:])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), foreign)
    with pytest.raises(CheckpointError, match=r"was not exported by fewshot-sdk"):
        fs.load_task(foreign)
    with pytest.raises(InputError, match="unknown runtime 'tensorrt'; choose one of 'torch', 'onnxruntime'"):
        fs.load_task(folder, runtime="tensorrt")
    with pytest.raises(CheckpointError, match=r"is an exported ONNX file: it runs with runtime='onnxruntime'"):
        fs.load_task(folder / "task.onnx", runtime="torch")
