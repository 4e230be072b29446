"""Batch norm folded into convolutions for inference, in the inference twin: exact, and only where it is exact."""

from __future__ import annotations

import copy

import torch
from torch import nn

import fewshot_sdk as fs
from fewshot_sdk.config import BackboneConfig, PreprocessConfig
from fewshot_sdk.models.backbones import Backbone, build_backbone
from fewshot_sdk.models.folding import fold_batchnorm_, foldable_pairs
from fewshot_sdk.models.frozen import FrozenBackbone


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


def conv4_backbone() -> Backbone:
    backbone = build_backbone(BackboneConfig(hidden=8), PreprocessConfig(image_size=28))
    with_statistics(backbone.body, seed=1)
    return backbone.eval()


def unfolded(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.body(x).flatten(1)


def test_the_inference_twin_runs_a_folded_copy_and_answers_as_the_body_does():
    backbone = conv4_backbone()
    x = torch.randn(5, 1, 28, 28)
    twin = FrozenBackbone(backbone)
    assert twin.body is not backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in twin.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())  # the trainable network keeps its own
    with torch.inference_mode():
        torch.testing.assert_close(twin(x), unfolded(backbone, x), rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in twin.parameters())
    assert not twin.train().training  # a twin only infers
    assert (twin.out_features, twin.inference_chunk) == (backbone.out_features, backbone.inference_chunk)


def test_the_twin_runs_many_inputs_in_chunks_with_the_same_answer():
    backbone = conv4_backbone()
    backbone.inference_chunk = 3
    twin = FrozenBackbone(backbone)
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(twin(x), torch.cat([twin(x[i : i + 1]) for i in range(8)]), rtol=1e-5, atol=1e-6)


def test_a_learner_changed_after_freezing_changes_neither_its_twin_nor_its_tasks_until_it_refreezes():
    learner = fs.create("protonet", backbone={"hidden": 8})
    with_statistics(learner.backbone.body, seed=2)
    learner.eval().freeze()
    twin = learner.inference_learner()
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        before = twin.backbone(x)
    learner.train()  # what every training loop calls first: the twin goes, the next adapt builds one anew
    assert not learner.frozen
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.5)
    learner.backbone(x).square().mean().backward()
    optimizer.step()
    with torch.inference_mode():
        torch.testing.assert_close(twin.backbone(x), before, rtol=0, atol=0)  # an old twin never changes
        learner.eval()
        torch.testing.assert_close(
            learner.inference_learner().backbone(x), unfolded(learner.backbone, x), rtol=1e-5, atol=1e-5
        )
    learner.freeze()
    state = {k: v + 1 if v.is_floating_point() else v for k, v in learner.state_dict().items()}
    learner.load_state_dict(state)  # new weights: a new twin
    with torch.inference_mode():
        torch.testing.assert_close(
            learner.inference_learner().backbone(x), unfolded(learner.backbone, x), rtol=1e-5, atol=1e-5
        )
    learner.double()  # moved or cast: the twin follows
    with torch.inference_mode():
        got = learner.inference_learner().backbone(x.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, unfolded(learner.backbone, x.double()), rtol=1e-12, atol=1e-12)


def test_the_twin_is_no_part_of_the_learners_weights():
    learner = fs.create("protonet", backbone={"hidden": 8}).freeze()
    assert set(learner.state_dict()) == set(fs.create("protonet", backbone={"hidden": 8}).state_dict())
    assert all(not name.startswith("_twin") for name, _ in learner.named_modules())


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
    with torch.inference_mode():
        twin = FrozenBackbone(backbone)
        assert any(isinstance(m, nn.BatchNorm2d) for m in twin.modules())
        torch.testing.assert_close(twin(x), module(x).flatten(1))
        backbone.fold_batchnorm = True  # the user says its Sequentials run whole: folded (and here, wrong)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in FrozenBackbone(backbone).modules())
