"""Side levels: the last blocks' pooled outputs kept beside EfficientNet-Lite0's head features, weighted by ProtoNet."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F

import fewshot_sdk as fs
from fewshot_sdk.checkpoint import ARCHITECTURE_FIELDS, LEARNER_FORMAT, learner_config, weights_header
from fewshot_sdk.export.runtime import OnnxClassifier
from fewshot_sdk.models.efficientnet_lite import EfficientNetLite0
from fewshot_sdk.models.folding import foldable_pairs, folded_copy

SIZE = 64  # every block still sees at least 2x2 pixels


def plain_and_carrying(side_levels: int) -> tuple[EfficientNetLite0, EfficientNetLite0]:
    torch.manual_seed(0)
    plain = EfficientNetLite0(image_size=(SIZE, SIZE))
    for module in plain.modules():  # batch norm statistics of their own, so eval mode is not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    carrying = EfficientNetLite0(image_size=(SIZE, SIZE), side_levels=side_levels)
    carrying.load_state_dict(plain.state_dict(), strict=True)  # the same parameter names
    return plain.eval(), carrying.eval()


@pytest.mark.parametrize("side_levels", [1, 2, 3])
def test_the_output_is_the_head_then_each_carried_blocks_pooled_output(side_levels):
    plain, carrying = plain_and_carrying(side_levels)
    x = torch.randn(3, 3, SIZE, SIZE)
    plain64 = plain.double()
    with torch.no_grad():
        outputs = []  # float64 reference: the plain chain, pooling each stage's output on the way
        h = x.double().contiguous(memory_format=torch.channels_last)
        for stage in plain64:
            h = stage(h)
            outputs.append(h)
        expected = torch.cat([outputs[-1], *(o.mean((2, 3)) for o in reversed(outputs[-2 - side_levels : -2]))], 1)
        got = carrying(x)
    assert carrying.side_level_channels == (320, 192, 192)[:side_levels]
    assert got.shape == (3, 1280 + sum(carrying.side_level_channels))
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_folds_in_carrying_stages_as_in_plain_ones():
    plain, carrying = plain_and_carrying(2)
    assert len(foldable_pairs(carrying)) == len(foldable_pairs(plain))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(folded_copy(carrying)(x), carrying(x), rtol=1e-4, atol=1e-4)


def test_protonet_weighs_unit_norm_levels_beside_its_own_head_transform():
    learner = fs.create(
        "protonet",
        backbone={"name": "efficientnet-lite0", "pretrained": False, "side_levels": (1.0, 0.5)},
        feature_norm="sqrt-l2",
        image_size=SIZE,
        resize_shorter=SIZE,
    )
    raw = torch.rand(4, 1280 + 320 + 192) - 0.3  # the levels are linear projections: either sign
    head, last, before = raw.double().split([1280, 320, 192], 1)
    expected = (
        torch.cat(
            [F.normalize(head.clamp_min(0).sqrt(), dim=1), F.normalize(last, dim=1), 0.5 * F.normalize(before, dim=1)],
            1,
        )
        / (1 + 1 + 0.25) ** 0.5
    )
    got = learner.transform(raw)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(4))


def test_a_side_level_task_saves_reloads_and_exports_with_parity(examples_dir, tmp_path):
    learner = fs.create(
        "protonet",
        backbone={"name": "efficientnet-lite0", "side_levels": (1.0, 0.5)},
        feature_norm="sqrt-l2",
        image_size=SIZE,
        resize_shorter=SIZE,
    )
    assert learner.backbone.out_features == 1792
    reloaded = fs.load(learner.save(tmp_path / "model"))
    assert reloaded.backbone_config.side_levels == (1.0, 0.5)
    support = fs.SupportSet.from_folder(examples_dir / "photos" / "support")
    queries = sorted((examples_dir / "photos" / "queries").iterdir())
    task = reloaded.adapt(support)
    expected = learner.adapt(support).predict(queries).probs
    torch.testing.assert_close(task.predict(queries).probs, expected, rtol=0, atol=1e-6)
    runner = OnnxClassifier(task.export_onnx(tmp_path / "task.onnx"), providers=["CPUExecutionProvider"])
    x = reloaded.preprocessor(queries)
    _, probs = runner.run(x.numpy())
    assert abs(probs - expected.numpy()).max() <= 1e-4


@pytest.mark.parametrize(
    ("backbone", "match"),
    [
        ({"name": "conv4", "side_levels": (1.0,)}, "side_levels are for efficientnet-lite0"),
        ({"name": "efficientnet-lite0", "side_levels": (1.0, 0.0)}, "must be > 0"),
        ({"name": "efficientnet-lite0", "side_levels": (1.0,) * 6}, "at most 5 side levels"),
    ],
)
def test_bad_side_levels_are_one_line(backbone, match):
    with pytest.raises(fs.InputError, match=match):
        fs.create("protonet", backbone=backbone, image_size=SIZE, resize_shorter=SIZE)


def test_side_levels_need_unit_norm_head_features():
    backbone = {"name": "efficientnet-lite0", "pretrained": False, "side_levels": (1.0,)}
    with pytest.raises(fs.InputError, match="feature_norm 'l2', 'sqrt-l2' or 'centered-l2'"):
        fs.create("protonet", backbone=backbone, feature_norm="none", image_size=SIZE, resize_shorter=SIZE)


def test_files_written_before_side_levels_keep_their_digest():
    """Without side levels the digest is the one of the config as it was before the field existed."""
    learner = fs.create("protonet", backbone={"name": "efficientnet-lite0", "pretrained": False}, image_size=SIZE)
    config = learner_config(learner)
    before = config.model_dump(mode="json", include=ARCHITECTURE_FIELDS)
    del before["backbone"]["side_levels"]
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert weights_header(config, LEARNER_FORMAT)["config_sha256"] == digest
    levelled = config.model_copy(update={"backbone": config.backbone.model_copy(update={"side_levels": (1.0,)})})
    assert weights_header(levelled, LEARNER_FORMAT)["config_sha256"] != digest
