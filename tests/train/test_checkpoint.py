import json

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.config import AccuracyResult
from fewshot_sdk.errors import CheckpointError, InputError


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    learner = fs.create("protonet", metric="cosine", image_size=20)
    learner.provenance.record(AccuracyResult(n_way=5, k_shot=1, q_queries=15, episodes=600, accuracy=0.9, ci95=0.01))
    return learner, learner.save(tmp_path / "ckpt")


def test_round_trip_restores_weights_config_and_provenance(saved):
    learner, folder = saved
    loaded = fs.load(folder)
    assert loaded.config == learner.config and loaded.preprocess_config.image_size == (20, 20)
    assert loaded.provenance.results[0].accuracy == 0.9
    for key, value in learner.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not loaded.training


def test_the_folder_holds_only_json_and_safetensors(saved):
    _, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    assert json.loads((folder / "config.json").read_text())["method"] == "protonet"


def test_existing_checkpoints_are_not_overwritten_without_the_flag(saved):
    learner, folder = saved
    with pytest.raises(InputError, match="already holds .*overwrite=True"):
        learner.save(folder)
    learner.save(folder, overwrite=True)


def test_corrupt_or_mismatched_checkpoints_are_refused_with_the_file_named(saved, tmp_path):
    _, folder = saved
    config = folder / "config.json"
    weights = folder / "weights.safetensors"
    original_config, original_weights = config.read_text(), weights.read_bytes()

    config.write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        fs.load(folder)
    config.write_text(json.dumps({**json.loads(original_config), "method": "nope"}))
    with pytest.raises(InputError, match="unknown method 'nope'"):
        fs.load(folder)
    config.write_text(json.dumps({**json.loads(original_config), "backbone": {"name": "conv4", "hidden": 32}}))
    with pytest.raises(CheckpointError, match="does not match its config.json: .* but the model needs"):
        fs.load(folder)
    config.write_text(json.dumps({k: v for k, v in json.loads(original_config).items() if k != "preprocess"}))
    with pytest.raises(CheckpointError, match="preprocess: Field required"):
        fs.load(folder)

    config.write_text(original_config)
    weights.write_bytes(original_weights[:100])
    with pytest.raises(CheckpointError, match="weights.safetensors is not a readable safetensors file"):
        fs.load(folder)
    weights.unlink()
    with pytest.raises(CheckpointError, match="weights.safetensors is missing"):
        fs.load(folder)
    with pytest.raises(CheckpointError, match="no checkpoint folder or bundled model named 'nothing-here'"):
        fs.load("nothing-here")


def test_custom_backbone_checkpoints_need_the_module_again(tmp_path):
    def net():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 16))

    learner = fs.create("protonet", backbone=net())
    folder = learner.save(tmp_path / "custom")
    with pytest.raises(InputError, match="custom backbone: pass the same nn.Module again"):
        fs.load(folder)
    loaded = fs.load(folder, backbone=net())
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded.backbone(x), learner.backbone(x))
