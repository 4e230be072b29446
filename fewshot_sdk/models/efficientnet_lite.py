"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of Google's edge release).

EfficientNet-B0's mobile inverted bottlenecks (MBConv: 1x1 expansion, depthwise
kxk convolution, 1x1 linear projection, identity shortcut when shape allows) with
the three changes the Lite family made for quantised edge inference: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem and head that are not
scaled with width (32 and 1280 channels). At 224x224 it is 0.4 GFLOPs and 3.4M
parameters below the classifier, which is what makes photo embedding tolerable on
a CPU.

The weights were trained in TensorFlow, whose "SAME" padding puts the extra pixel of
an even-sized strided convolution at the bottom/right; :class:`SamePadConv2d`
reproduces that, otherwise every strided layer would be shifted by half a pixel
against the ImageNet weights. That padding depends on the input's size; the network is
built for the size preprocessing gives it (``image_size``) and plans each layer's
padding for that size, which is what an ONNX export's trace records (the tracer sees
sizes as tensors, and arithmetic on them would freeze Python numbers into the trace).

The network is an ``nn.Sequential`` of *stages* (stem, 16 blocks, head, pooling) so
that training can freeze a prefix and compute it once (see ``Backbone.stage_outputs``).

``side_levels`` keeps the outputs of the last blocks beside the head's features. Off the
photos a network was trained on (satellite tiles, leaves, textures) its last layers are the
most specific to that training, and the blocks before them carry more of what transfers
(Yosinski et al. 2014; Zou et al. 2021 for few-shot photos of other domains; measured here in
``benchmarks/results/cross_domain_cpu.md``). Each of the last
``side_levels`` weighted stages passes its own input along, appended after its output as
extra channels, so the chain of stages stays a chain: a prefix computed once still holds
every level the rest needs. Those blocks all work at 1/32 of the input size, so the pooled
output is ``[head | last block | the block before | ...]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_sdk.config import MAX_SIDE_LEVELS

#: (repeats, kernel, stride of the first block, expansion, input channels, output channels), Table 1 of the paper.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
FEATURES = 1280
#: TensorFlow's batch-norm epsilon, which the ImageNet statistics were estimated with.
BN_EPS = 1e-3


Size = tuple[int, int]


def same_padding(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int]) -> list[int]:
    """``F.pad``'s (left, right, top, bottom) for TensorFlow's SAME on an input of spatial ``size`` (H, W)."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel_size), reversed(stride), strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def same_output_size(size: Size, stride: int) -> Size:
    """The spatial size after a SAME convolution of ``stride``: ceil(n / stride), whatever the kernel."""
    return (math.ceil(size[0] / stride), math.ceil(size[1] / stride))


class SamePadConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's ``padding="SAME"`` (extra pixel after, not before).

    ``input_size`` (H, W), when known at build time, plans the padding for that size: a trace
    (ONNX export) uses the plan, since computing it from a traced input's sizes would freeze
    Python numbers into the trace. Eager calls compute the padding from the actual size, so
    any size works there; an export traces at the preprocessing size, the planned one, and
    keeps its graph only if it matches eager calls (:mod:`fewshot_sdk.export.onnx`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        input_size: Size | None = None,
    ) -> None:
        symmetric = stride == 1 and kernel_size % 2 == 1  # then SAME is ordinary symmetric padding
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=kernel_size // 2 if symmetric else 0,
            groups=groups,
            bias=False,
        )
        self.pad_in_forward = not symmetric
        planned = self.pad_in_forward and input_size is not None
        self.planned_padding = same_padding(input_size, self.kernel_size, self.stride) if planned else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_in_forward:
            if torch.jit.is_tracing() and self.planned_padding is not None:
                x = F.pad(x, self.planned_padding)
            else:
                x = F.pad(x, same_padding(x.shape[-2:], self.kernel_size, self.stride))
        return super().forward(x)


def conv_bn_relu6(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    input_size: Size | None = None,
) -> nn.Sequential:
    return nn.Sequential(
        SamePadConv2d(in_channels, out_channels, kernel_size, stride, groups, input_size),
        nn.BatchNorm2d(out_channels, eps=BN_EPS),
        nn.ReLU6(inplace=True),
    )


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (Sandler 2018; Lite variant).

    ``input_size``: the spatial size it will see, if known, to plan the depthwise convolution's
    padding (the 1x1 convolutions need none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expansion: int,
        input_size: Size | None = None,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = conv_bn_relu6(in_channels, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn_relu6(hidden, hidden, kernel_size, stride, groups=hidden, input_size=input_size)
        self.project = nn.Sequential(SamePadConv2d(hidden, out_channels, 1), nn.BatchNorm2d(out_channels, eps=BN_EPS))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class CarriesInput(nn.Module):
    """A stage that runs on the first ``in_channels`` channels of its input and appends the whole input after
    its output as extra channels (``side_levels``): the rest are levels carried from earlier stages.

    Mixed in before the stage it extends, whose parameters keep their names, so ImageNet and trained weights
    load as they are.
    """

    in_channels: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([super().forward(x[:, : self.in_channels]), x], dim=1)


class MBConvCarryingInput(CarriesInput, MBConv):
    """An MBConv block whose output has its input appended (:class:`CarriesInput`)."""

    def __init__(self, in_channels: int, *args: object, **kwargs: object) -> None:
        super().__init__(in_channels, *args, **kwargs)
        self.in_channels = in_channels


class HeadCarryingInput(CarriesInput, nn.Sequential):
    """The 1x1 head (convolution, batch norm, ReLU6), with its input appended (:class:`CarriesInput`).

    Its children run in order, so batch norm folds into the convolution as in a plain ``nn.Sequential``
    (``runs_children_in_order``).
    """

    runs_children_in_order = True

    def __init__(self, head: nn.Sequential, in_channels: int) -> None:
        super().__init__(*head)
        self.in_channels = in_channels


class GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class EfficientNetLite0(nn.Sequential):
    """Stem, the 16 MBConv blocks, the 1x1 head to 1280 channels and, with ``pool``, global average pooling.

    ``pool=False`` ends at the [1280, H/32, W/32] feature maps (Relation Networks compare those).
    ``image_size`` (H, W): the size preprocessing makes, for which every strided layer plans its
    padding (see :class:`SamePadConv2d`); other sizes still run eagerly.
    ``side_levels``: how many of the last blocks' outputs follow the head's 1280 features (module docstring).
    """

    def __init__(
        self, in_channels: int = 3, pool: bool = True, image_size: Size | None = None, side_levels: int = 0
    ) -> None:
        if not 0 <= side_levels <= MAX_SIDE_LEVELS:
            raise ValueError(f"side_levels must be 0..{MAX_SIDE_LEVELS}, not {side_levels}")
        blocks = [
            (c_out if index else c_in, c_out, kernel, first_stride if index == 0 else 1, expansion)
            for repeats, kernel, first_stride, expansion, c_in, c_out in LITE0_STAGES
            for index in range(repeats)
        ]
        carrying = len(blocks) + 1 - side_levels  # blocks from this index on (the head is the last) carry
        stages: list[nn.Module] = [conv_bn_relu6(in_channels, STEM_CHANNELS, 3, stride=2, input_size=image_size)]
        size = same_output_size(image_size, 2) if image_size is not None else None
        for index, (c_in, c_out, kernel, stride, expansion) in enumerate(blocks):
            block = MBConvCarryingInput if index >= carrying else MBConv
            stages.append(block(c_in, c_out, kernel, stride, expansion, size))
            size = same_output_size(size, stride) if size is not None else None
        head = conv_bn_relu6(LITE0_STAGES[-1][-1], FEATURES, 1)
        stages.append(HeadCarryingInput(head, LITE0_STAGES[-1][-1]) if side_levels else head)
        # each carrying stage appends its input after its output: the last one's comes first
        carried = [stage.in_channels for stage in reversed(stages) if isinstance(stage, CarriesInput)]
        if pool:
            stages.append(GlobalAveragePool())
        super().__init__(*stages)
        #: channels of each carried level after the head's, the last block's first
        self.side_level_channels = tuple(carried)
        # NHWC: torch's CPU depthwise and 1x1 convolutions run ~1.45x faster in this layout
        # (measured: 16 photos at 192x192, 0.32 s -> 0.22 s on 2 threads); results are the same.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


def from_reference_state_dict(reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the ``efficientnet_lite_pytorch`` (lukemelas-style) keys onto :class:`EfficientNetLite0`'s.

    Used once, to convert the published ImageNet weights; the classifier (``_fc``) is returned
    under ``classifier.weight`` / ``classifier.bias`` for the ImageNet sanity check.
    """
    blocks = 1 + sum(stage[0] for stage in LITE0_STAGES)  # index of the head stage
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in reference.items():
        parts = key.split(".")
        if parts[0] == "_conv_stem":
            name = "0.0." + parts[1]
        elif parts[0] == "_bn0":
            name = "0.1." + parts[1]
        elif parts[0] == "_conv_head":
            name = f"{blocks}.0.{parts[1]}"
        elif parts[0] == "_bn1":
            name = f"{blocks}.1.{parts[1]}"
        elif parts[0] == "_fc":
            name = "classifier." + parts[1]
        elif parts[0] == "_blocks":
            stage = 1 + int(parts[1])
            layer = {
                "_expand_conv": "expand.0",
                "_bn0": "expand.1",
                "_depthwise_conv": "depthwise.0",
                "_bn1": "depthwise.1",
                "_project_conv": "project.0",
                "_bn2": "project.1",
            }[parts[2]]
            name = f"{stage}.{layer}.{parts[3]}"
        else:
            raise KeyError(f"unexpected EfficientNet-Lite0 weight {key!r}")
        renamed[name] = tensor
    return renamed
