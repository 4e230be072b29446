"""Batch norm folded into convolutions for inference: exact against float64, and only where it is exact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from fewshot_sdk.config import BackboneConfig, PreprocessConfig
from fewshot_sdk.models.backbones import build_backbone
from fewshot_sdk.models.folding import FoldedInference, fold_batchnorm_, foldable_pairs


def with_statistics(network: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters on every batch norm, so that folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g))
            module.running_var.copy_(torch.rand(n, generator=g) + 0.2)
            if module.affine:
                module.weight.data.copy_(torch.randn(n, generator=g))
                module.bias.data.copy_(torch.randn(n, generator=g))
    return network


class Reordered(nn.Sequential):
    """A Sequential whose forward does not run its children in order: its pairs are not adjacent in fact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[0](self[1](x)) if x.shape[1] == self[1].num_features else self[0](x)


def mixed_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU()),
        nn.Sequential(nn.Conv2d(6, 6, 3, groups=6), nn.BatchNorm2d(6, affine=False), nn.ReLU6()),
        nn.Sequential(nn.Conv2d(6, 5, 1, stride=2), nn.BatchNorm2d(5, eps=1e-3)),
        nn.Flatten(2),
        nn.Conv1d(5, 7, 3),
        nn.BatchNorm1d(7),
    )


def test_folded_networks_compute_the_same_function_in_float64():
    network = with_statistics(mixed_network()).double().eval()
    x = torch.randn(3, 3, 11, 13, dtype=torch.float64)
    expected = network(x)
    folded = copy.deepcopy(network)
    assert fold_batchnorm_(folded) == 4
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, rtol=1e-12, atol=1e-12)
    assert all(not p.requires_grad for p in folded[0][0].parameters())
    # the original is untouched
    torch.testing.assert_close(network(x), expected, rtol=0, atol=0)


def test_float32_folding_is_rounded_once_from_float64():
    network = with_statistics(mixed_network()).eval()
    x = torch.randn(2, 3, 9, 9)
    expected = network.double()(x.double())
    folded = copy.deepcopy(network.float())
    fold_batchnorm_(folded)
    error = (folded(x).double() - expected).abs().max()
    assert error <= 1e-5 * expected.abs().max()


def test_only_pairs_that_are_certainly_conv_then_eval_batchnorm_fold():
    network = mixed_network().eval()
    network[0][1].train()  # normalises by its batch
    network[2][1] = nn.BatchNorm2d(5, track_running_stats=False).eval()  # no statistics of its own
    network[1] = Reordered(*network[1])  # a subclass may run its children in any order
    assert foldable_pairs(network) == [(network, "4", "5")]


def conv4_backbone() -> nn.Module:
    backbone = build_backbone(BackboneConfig(hidden=8), PreprocessConfig(image_size=28))
    with_statistics(backbone.body, seed=1)
    return backbone.eval()


def unfolded(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.body(x).flatten(1)


def test_backbone_inference_runs_the_folded_copy_and_answers_as_the_body_does():
    backbone = conv4_backbone()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        got = backbone(x)
        inference = backbone.inference_body()
    assert inference is not backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in inference.modules())
    torch.testing.assert_close(got, unfolded(backbone, x), rtol=1e-5, atol=1e-5)
    # autograd and training run the body itself
    assert backbone.inference_body() is backbone.body
    assert backbone(x).requires_grad
    with torch.no_grad():
        assert backbone.train().inference_body() is backbone.body
    # nothing of the copy is in the state dict, and a deep copy folds its own
    assert set(backbone.state_dict()) == set(conv4_backbone().state_dict())
    assert copy.deepcopy(backbone.eval())._folded is None


def test_weights_changed_after_folding_are_folded_again():
    backbone = conv4_backbone()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        backbone(x)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.5)
    backbone.train()
    backbone(x).square().mean().backward()
    optimizer.step()  # also moves the running statistics (a training-mode forward)
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), unfolded(backbone, x), rtol=1e-5, atol=1e-5)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in conv4_backbone().state_dict().items()}
    backbone.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), unfolded(backbone, x), rtol=1e-5, atol=1e-5)
    backbone.double()
    with torch.no_grad():
        assert backbone(x.double()).dtype == torch.float64
        torch.testing.assert_close(backbone(x.double()), unfolded(backbone, x.double()), rtol=1e-12, atol=1e-12)
    backbone.body[2][1].train()  # one layer back to batch statistics
    with torch.no_grad():
        torch.testing.assert_close(backbone(x.double()), unfolded(backbone, x.double()), rtol=1e-12, atol=1e-12)


def test_a_forward_hook_sees_the_network_itself_run():
    backbone = conv4_backbone()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        backbone(x)  # folded before the hook
    seen: list[torch.Size] = []
    handle = backbone.body[1][1].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    with torch.no_grad():
        backbone(x)
    assert seen == [torch.Size([2, 8, 14, 14])]
    handle.remove()
    with torch.no_grad():
        backbone(x)
        assert len(seen) == 1 and backbone.inference_body() is not backbone.body


def test_a_functional_call_runs_its_own_weights_and_keeps_the_fold():
    backbone = conv4_backbone()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        backbone(x)
    folded = backbone._folded
    doubled = {name: 2 * p for name, p in backbone.named_parameters()}  # carry autograd history
    with torch.no_grad():
        got = functional_call(backbone, doubled, (x,))
    reference = copy.deepcopy(backbone)
    reference.fold_batchnorm = False
    with torch.no_grad():
        torch.testing.assert_close(got, functional_call(reference, doubled, (x,)))
        backbone(x)
    assert backbone._folded is folded


@pytest.mark.parametrize("hooked", [False, True])
def test_nothing_to_fold_leaves_the_body_answering(hooked):
    body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    if hooked:
        body = with_statistics(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))).eval()
        body[0].register_forward_pre_hook(lambda *_: None)
    assert FoldedInference(body).network is None


def test_a_users_module_is_folded_only_when_asked():
    # A module of the user's may call its Sequentials' children one at a time: here the batch norm normalises the
    # convolution's output plus a skip, which folding into the convolution would silently get wrong.
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.BatchNorm2d(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pair[1](self.pair[0](x) + x)

    module = with_statistics(Skips()).eval()
    backbone = build_backbone(BackboneConfig(name="custom"), PreprocessConfig(image_size=8), module).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert backbone.inference_body() is module
        torch.testing.assert_close(backbone(x), module(x).flatten(1))
        backbone.fold_batchnorm = True  # the user says its Sequentials run whole: folded (and here, wrong)
        assert backbone.inference_body() is not module
