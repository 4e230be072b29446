"""Every registered method: torch ``predict`` vs the exported ``.onnx`` under onnxruntime.

Methods are collected from the registry, so a method added later is covered
without touching this file. One export per method (exporting is the slow part).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.export.metadata import OnnxMetadata
from fewshot_sdk.export.runtime import OnnxClassifier

from .conftest import at_resolution, canonical_methods

METHODS = canonical_methods()
TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=METHODS)
def adapted(request, omniglot_task_data):
    """An untrained (seeded) learner of each method adapted to a 3-way 2-shot real Omniglot task."""
    support_x, support_y, queries, names = omniglot_task_data
    torch.manual_seed(0)
    learner = fs.create(request.param)
    support = fs.SupportSet.from_tensors(at_resolution(support_x, learner), support_y, class_names=names)
    return learner.adapt(support), at_resolution(queries, learner)


@pytest.fixture(scope="module")
def exported(adapted, tmp_path_factory):
    task, queries = adapted
    path = task.export_onnx(tmp_path_factory.mktemp(task.method) / f"{task.method}.onnx")
    return task, path, queries


@pytest.mark.parametrize("batch", [1, 37])
def test_onnxruntime_probabilities_match_torch_predict(exported, batch):
    task, path, queries = exported
    runner = OnnxClassifier(path, providers=["CPUExecutionProvider"])
    query = queries[:batch]
    expected = task.predict(query)
    logits, probs = runner.run(query.numpy())
    assert probs.shape == (batch, task.num_classes) and logits.shape == probs.shape
    assert np.abs(probs - expected.probs.numpy()).max() <= TOLERANCE
    # the two outputs agree with each other under the method's own probability rule
    with torch.no_grad():
        again = task.learner.probabilities(torch.from_numpy(logits)).numpy()
    assert np.abs(again - probs).max() <= TOLERANCE
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3  # argmax is only meaningful away from ties
    assert (probs.argmax(1)[clear] == expected.indices.numpy()[clear]).all()


def test_exported_file_is_valid_self_contained_and_carries_metadata(exported):
    task, path, _ = exported
    onnx.checker.check_model(str(path), full_check=True)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no external .data file
    model = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output][:2] == ["logits", "probs"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    config = task.learner.preprocess_config
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(config.input_shape)
    metadata = OnnxMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path))
    assert metadata.method == task.method and metadata.class_names == task.class_names
    assert metadata.image_size == tuple(config.image_size) and metadata.channels == config.channels
    assert metadata.mean == tuple(config.mean) and metadata.std == tuple(config.std)
    assert metadata.sdk_version == fs.__version__


def test_every_method_is_written_by_the_fast_tracer(exported):
    """No method's trace warns: a size check or a value-dependent branch on the traced path would send
    it to torch.export, several times slower (benchmarks/results/export_time_cpu.md)."""
    _, path, _ = exported
    model = onnx.load(str(path), load_external_data=False)
    assert OnnxMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(path)).exporter == "torchscript"


def test_saved_task_round_trips_exactly(adapted, tmp_path):
    task, queries = adapted
    again = fs.load_task(task.save(tmp_path / "task"))
    assert (again.method, again.class_names, again.task) == (task.method, task.class_names, task.task)
    assert again.learner.config == task.learner.config
    assert again.learner.preprocess_config == task.learner.preprocess_config
    assert list(again.state) == list(task.state)
    for name, tensor in task.state.items():
        assert again.state[name].dtype == tensor.dtype and torch.equal(again.state[name], tensor), name
    mine, theirs = task.learner.state_dict(), again.learner.state_dict()
    assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(again.predict(queries).probs, task.predict(queries).probs)
