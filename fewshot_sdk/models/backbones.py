"""Backbones: the embedding networks every method shares.

Conv4 is the field's standard few-shot embedding (Vinyals 2016; Snell 2017): four
blocks of 3x3 conv (64 filters), batch norm, ReLU and 2x2 max-pooling, giving 64-d
features at 28x28 and 1600-d at 84x84. ResNet-12 is the stronger backbone of
later work (TADAM, MetaOptNet). EfficientNet-Lite0 with ImageNet weights is the photo
backbone (:mod:`fewshot_sdk.models.efficientnet_lite`). Any ``nn.Module`` can stand in via
:class:`WrappedBackbone`. Each exposes ``out_features`` (flattened size) and
``out_shape`` (feature-map shape), measured by one dry run, so methods never
hard-code them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_sdk.config import BackboneConfig, PreprocessConfig
from fewshot_sdk.errors import InputError
from fewshot_sdk.models.efficientnet_lite import EfficientNetLite0

#: The input EfficientNet-Lite0's ImageNet weights expect: RGB, shorter side 256 then a 224 centre crop,
#: scaled the TF-Lite way, (x - 127) / 128 on 0..255 pixels, i.e. mean 127/255 and std 128/255 on [0, 1].
PHOTO_PREPROCESS = PreprocessConfig(
    image_size=(224, 224), channels=3, mean=(127 / 255,), std=(128 / 255,), resize_shorter=256
)


def conv_block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Sequential):
    """Four conv blocks; the first ``pooled_blocks`` end in 2x2 max-pooling."""

    def __init__(self, in_channels: int = 1, hidden: int = 64, pooled_blocks: int = 4) -> None:
        blocks = [conv_block(in_channels if i == 0 else hidden, hidden, pool=i < pooled_blocks) for i in range(4)]
        super().__init__(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last: on CPU, oneDNN's convolutions and above all max-pooling run faster on it than on
        # NCHW at few-shot sizes, in training too once the first convolution answers channels-last
        # (benchmarks/results/conv4_layout_cpu.md).
        if x.dim() != 4:
            return super().forward(x)
        x = as_channels_last(x)
        for block in self:
            convolution, *rest = block  # (block[1:] would build a new Sequential on every call)
            # a no-op once the first convolution has answered channels-last
            x = convolution(x).contiguous(memory_format=torch.channels_last)
            for layer in rest:
                x = layer(x)
        return x


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` with channels-last strides, which oneDNN's convolution reads as a request for a channels-last output.

    A one-channel image batch already counts as channels-last contiguous, so ``contiguous(channels_last)``
    leaves its NCHW strides, and oneDNN then runs its slow NCHW one-channel convolution and answers NCHW,
    to be converted again, where the same memory viewed with channels-last strides takes the fast path (a
    stride over a size-1 dimension is free to choose; ``benchmarks/results/conv4_layout_cpu.md``). Left out of
    traced and compiled graphs, which would bake the batch size into ``as_strided`` (an ONNX file runs its
    own layouts anyway).
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return x
    if x.size(1) == 1:
        height, width = x.shape[2:]
        return x.contiguous().as_strided(x.shape, (height * width, 1, width, 1))
    return x.contiguous(memory_format=torch.channels_last)


class ResidualBlock(nn.Module):
    """ResNet-12 stage: three 3x3 convs with a 1x1 projection shortcut, then 2x2 max-pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Sequential):
    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (64, 160, 320, 640)) -> None:
        channels = (in_channels, *widths)
        super().__init__(*(ResidualBlock(channels[i], channels[i + 1]) for i in range(len(widths))))


class MLP(nn.Sequential):
    """Fully connected ReLU layers for vector inputs (MAML's sinusoid regressor: 1 -> 40 -> 40)."""

    def __init__(self, in_features: int = 1, layers: tuple[int, ...] = (40, 40)) -> None:
        widths = (in_features, *layers)
        blocks: list[nn.Module] = []
        for i in range(len(layers)):
            blocks += [nn.Linear(widths[i], widths[i + 1]), nn.ReLU()]
        super().__init__(*blocks)


#: The inference twin (:class:`~fewshot_sdk.models.frozen.FrozenBackbone`) runs inputs in chunks whose
#: largest layer output stays within this many bytes. Above it, every call's activations come fresh
#: from the kernel: glibc's malloc serves a block larger than its mmap threshold (which adapts up to
#: 32 MiB) with new pages each time, zero-filled on first touch (``benchmarks/results/photo_speed_cpu.md``).
#: A fixed number of photos per chunk also keeps the memory of an adapt on hundreds of them fixed.
INFERENCE_CHUNK_BYTES = 16 << 20


def stages_of(body: nn.Module) -> list[nn.Module]:
    """A network's chain of stages: an ``nn.Sequential``'s children, else the network alone."""
    return list(body.children()) if isinstance(body, nn.Sequential) else [body]


class Backbone(nn.Module):
    """A feature-map network plus the choice to flatten; knows its own output size.

    This is the trainable network. Inference speed-ups (batch norm folded, chunks, onnxruntime)
    live in its inference twin, :class:`~fewshot_sdk.models.frozen.FrozenBackbone`, which a
    learner builds when it is frozen for inference or adapts to a task.
    """

    #: Whether the inference twin folds batch norm into the convolution before it. Off where that
    #: is not known to be exact (a user's module) or where there is nothing to fold.
    fold_batchnorm: bool = True
    #: Inference on more inputs than this runs in chunks (set from INFERENCE_CHUNK_BYTES when built).
    inference_chunk: int = 1 << 30
    #: (channels, weight) of each level that follows the first features (EfficientNet's ``side_levels``)
    side_levels: tuple[tuple[int, float], ...] = ()

    def __init__(self, body: nn.Module, input_shape: tuple[int, ...], flatten: bool) -> None:
        super().__init__()
        self.body = body
        self.flatten = flatten
        self.input_shape = tuple(input_shape)
        was_training = body.training
        body.eval()
        largest: list[int] = [0]  # bytes of the largest output any layer makes for one input

        def measure(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                largest[0] = max(largest[0], output.numel() * output.element_size() // 2)

        hooks = [module.register_forward_hook(measure) for module in body.modules()]
        try:
            with torch.no_grad():
                probe = body(torch.zeros(2, *input_shape))
        except Exception as exc:  # a user module that cannot take the configured input
            raise InputError(
                f"the backbone cannot process inputs of shape {input_shape} (channels, height, width): {exc}"
            ) from None
        finally:
            body.train(was_training)
            for hook in hooks:
                hook.remove()
        self.out_shape = tuple(probe.shape[1:])
        self.out_features = int(probe[0].numel())
        self.inference_chunk = max(1, INFERENCE_CHUNK_BYTES // max(1, largest[0]))

    # A backbone is a chain of stages (the children of an nn.Sequential body, else the body
    # alone). Training that freezes the first stages, and evaluation of a method whose
    # embedding does not depend on the task, compute a prefix once per image and then run
    # only the rest: ``stage_outputs`` makes those inputs and ``starting_at`` consumes them.
    _start_stage: int = 0

    @property
    def stages(self) -> list[nn.Module]:
        return stages_of(self.body)

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Stages ``start``..``stop``-1 of the body on ``x`` (the whole body when that is all of them)."""
        if start == 0 and stop == len(self.stages):
            return self.body(x)
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The unflattened output (feature maps for conv backbones)."""
        return self.run_stages(x, self._start_stage, len(self.stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        return out.flatten(1) if self.flatten else out

    def stage_outputs(
        self,
        images: torch.Tensor,
        stages: int,
        batch_size: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """What the stages up to ``stages`` make of ``images`` (eval mode, no grad, in batches), on the CPU.

        ``batch_size``: images per batch, by default the backbone's ``inference_chunk``.

        Inside ``starting_at(k)`` the images are stage k's inputs and only stages k..``stages``-1 run.
        """
        if not self._start_stage <= stages <= len(self.stages):
            raise InputError(
                f"this backbone has {len(self.stages)} stages; cannot run stages {self._start_stage}..{stages - 1}"
            )
        batch_size = batch_size or self.inference_chunk
        was_training = self.training
        self.eval()
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        outputs = []
        try:
            with torch.inference_mode():
                for start in range(0, len(images), batch_size):
                    batch = images[start : start + batch_size].to(device)
                    outputs.append(self.run_stages(batch, self._start_stage, stages).cpu())
                    if on_batch is not None:
                        on_batch(min(start + batch_size, len(images)))
        finally:
            self.train(was_training)
        return torch.cat(outputs)

    def split_levels(self, features: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Flat features [..., out_features] as (the first ones, [each side level's]): EfficientNet's side levels."""
        if not self.side_levels:
            return features, []
        sizes = [channels for channels, _ in self.side_levels]
        first, *sides = features.split([features.shape[-1] - sum(sizes), *sizes], dim=-1)
        return first, sides

    def join_levels(self, first: torch.Tensor, sides: list[torch.Tensor]) -> torch.Tensor:
        """Unit-norm ``first`` features and the side levels, each L2-normalised and weighted, as one unit vector."""
        if not sides:
            return first
        weights = [weight for _, weight in self.side_levels]
        joined = torch.cat(
            [first, *(w * F.normalize(side, dim=-1) for w, side in zip(weights, sides, strict=True))], -1
        )
        return joined / math.sqrt(1 + sum(w * w for w in weights))

    @contextmanager
    def starting_at(self, stage: int) -> Iterator[None]:
        """Within this block the backbone takes the outputs of stage ``stage`` - 1 as its input."""
        if not 0 <= stage <= len(self.stages):
            raise InputError(f"this backbone has {len(self.stages)} stages; cannot start at {stage}")
        previous, self._start_stage = self._start_stage, stage
        try:
            yield
        finally:
            self._start_stage = previous


class WrappedBackbone(Backbone):
    """Any feature extractor: its output is flattened to one vector per input.

    Batch norm is not folded here unless asked (``fold_batchnorm = True``): folding assumes that an
    ``nn.Sequential`` runs its children in order, and a module of the user's may call them one by one,
    feeding a batch norm something other than the convolution before it.
    """

    fold_batchnorm = False

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int]) -> None:
        super().__init__(module, input_shape, flatten=True)


def build_backbone(config: BackboneConfig, preprocess: PreprocessConfig, module: nn.Module | None = None) -> Backbone:
    shape = preprocess.input_shape
    if config.name == "custom" or module is not None:
        if module is None:
            raise InputError(
                "this model uses a custom backbone: pass the same nn.Module again, e.g. fs.load(path, backbone=MyNet())"
            )
        return WrappedBackbone(module, shape)
    if config.name == "mlp":
        return Backbone(MLP(config.in_features, config.layers), (config.in_features,), flatten=True)
    if config.name == "efficientnet-lite0":
        return efficientnet_lite0(config, shape)
    if config.name == "conv4":
        body: nn.Module = Conv4(shape[0], config.hidden, config.pooled_blocks)
    else:
        body = ResNet12(shape[0], config.widths)
    return Backbone(body, shape, config.flatten)


def efficientnet_lite0(config: BackboneConfig, shape: tuple[int, int, int]) -> Backbone:
    if shape[0] != 3:
        raise InputError(
            f"efficientnet-lite0 takes RGB images (channels=3), not {shape[0]}-channel ones; "
            "drop channels=1 or pick conv4 for greyscale data"
        )
    body = EfficientNetLite0(
        shape[0], pool=config.flatten, image_size=(shape[1], shape[2]), side_levels=len(config.side_levels)
    )
    if config.pretrained:
        from fewshot_sdk.models.pretrained import imagenet_weights

        imagenet_weights(body)
    backbone = Backbone(body, shape, flatten=config.flatten)
    backbone.side_levels = tuple(zip(body.side_level_channels, config.side_levels, strict=True))
    return backbone


def default_preprocess(config: BackboneConfig) -> PreprocessConfig:
    """The preprocessing a backbone's weights expect, used when the user sets none."""
    return PHOTO_PREPROCESS if config.name == "efficientnet-lite0" else PreprocessConfig()


def default_domain(config: BackboneConfig) -> str:
    """ImageNet weights know photos; a randomly initialised network knows nothing yet."""
    return "photos" if config.pretrained_weights else "unspecified"
