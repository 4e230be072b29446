import pytest
import torch

from fewshot_sdk.config import BackboneConfig, PreprocessConfig
from fewshot_sdk.errors import InputError
from fewshot_sdk.models.backbones import Conv4, as_channels_last, build_backbone


def test_conv4_gives_64_features_at_28_and_1600_at_84():
    assert build_backbone(BackboneConfig(), PreprocessConfig(image_size=28)).out_features == 64
    rgb84 = PreprocessConfig(image_size=84, channels=3, mean=(0.5,), std=(0.25,))
    assert build_backbone(BackboneConfig(), rgb84).out_features == 1600


def test_feature_maps_are_kept_when_asked():
    backbone = build_backbone(BackboneConfig(pooled_blocks=2, flatten=False), PreprocessConfig(image_size=28))
    assert backbone.out_shape == (64, 7, 7)
    assert backbone(torch.zeros(3, 1, 28, 28)).shape == (3, 64, 7, 7)


def test_resnet12_shapes_at_84():
    config = PreprocessConfig(image_size=84, channels=3, mean=(0.5,), std=(0.25,))
    backbone = build_backbone(BackboneConfig(name="resnet12"), config)
    assert backbone.out_shape == (640, 5, 5)
    assert backbone(torch.zeros(2, 3, 84, 84)).shape == (2, 16000)


def test_any_module_is_wrapped_and_flattened_and_bad_ones_are_refused():
    module = torch.nn.Conv2d(1, 4, 3)
    backbone = build_backbone(BackboneConfig(name="custom"), PreprocessConfig(image_size=10), module)
    assert backbone.out_features == 4 * 8 * 8
    with pytest.raises(InputError, match=r"cannot process inputs of shape \(1, 10, 10\)"):
        build_backbone(BackboneConfig(name="custom"), PreprocessConfig(image_size=10), torch.nn.Linear(3, 3))


@pytest.mark.parametrize("channels", [1, 3])
def test_conv4_inference_runs_channels_last_without_changing_a_number(channels):
    # A one-channel batch needs strides chosen for it, or oneDNN answers NCHW through its slow path. The
    # float64 NCHW forward of the same weights is the reference, on an odd batch and a non-contiguous input.
    torch.manual_seed(0)
    network = Conv4(in_channels=channels).eval()
    images = torch.randn(7, channels, 28, 30)[..., 1:29]
    expected = torch.nn.Sequential.forward(network.double(), images.double())
    torch.testing.assert_close(network.float()(images).double(), expected, rtol=1e-4, atol=1e-5)
    viewed = as_channels_last(images)
    assert torch.equal(viewed, images) and viewed.is_contiguous(memory_format=torch.channels_last)
    assert network[0][0](viewed).is_contiguous(memory_format=torch.channels_last)


def test_inference_chunks_keep_the_largest_layer_output_within_the_budget():
    # Past glibc's mmap threshold every call's activations come fresh from the kernel (page faults), so chunks
    # are sized by the largest layer output of one input, measured on the probe forward.
    from fewshot_sdk.models.backbones import INFERENCE_CHUNK_BYTES, Backbone

    body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.MaxPool2d(2))
    backbone = Backbone(body, (1, 10, 10), flatten=True)
    assert backbone.inference_chunk == INFERENCE_CHUNK_BYTES // (8 * 10 * 10 * 4)
    assert not any(m._forward_hooks for m in body.modules())
    conv4 = build_backbone(BackboneConfig(), PreprocessConfig(image_size=28))
    assert conv4.inference_chunk == INFERENCE_CHUNK_BYTES // (64 * 28 * 28 * 4)
    conv4.inference_chunk = 3
    batches: list[int] = []
    conv4.stage_outputs(torch.zeros(7, 1, 28, 28), 2, on_batch=batches.append)
    assert batches == [3, 6, 7]
