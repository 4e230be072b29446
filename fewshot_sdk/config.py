"""Pydantic models shared by every method, by training and by evaluation.

Configuration is validated at the boundary (``fs.create`` keyword arguments, a
checkpoint's ``config.json``, CLI flags) so that nothing downstream has to guess
what a field means. Every model forbids unknown keys: a typo is an error, not a
silently ignored setting.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class StrictModel(BaseModel):
    """Base of every config: unknown keys are refused, values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


#: The largest image side a model may take: beyond it a single input would not fit in memory.
MAX_IMAGE_SIDE = 4096
ImageSide = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]


class PreprocessConfig(StrictModel):
    """How an image becomes the tensor a model consumes; stored in every checkpoint."""

    image_size: tuple[ImageSide, ImageSide] = (28, 28)
    channels: Literal[1, 3] = 1
    mean: tuple[Annotated[float, Field(allow_inf_nan=False)], ...] = (0.92,)
    #: A std near 0 would blow pixels up past what any network was trained on (1e-45 gave NaN answers).
    std: tuple[Annotated[float, Field(ge=1e-6, allow_inf_nan=False)], ...] = (0.22,)
    resize_shorter: int | None = Field(
        None,
        ge=1,
        description="photos: scale the shorter side to this many pixels, then centre-crop image_size "
        "(keeps the aspect ratio, as ImageNet models were trained); None stretches the image to image_size",
    )

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: object) -> object:
        return (value, value) if isinstance(value, int) else value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(s <= 0 for s in value):  # (the field's bound says so too; kept for a clear message)
            raise ValueError("every std entry must be > 0")
        return value

    @model_validator(mode="after")
    def _stats_match_channels_and_crop_fits(self) -> PreprocessConfig:
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} entries")
        if self.resize_shorter is not None and self.resize_shorter < min(self.image_size):
            raise ValueError(f"resize_shorter {self.resize_shorter} is smaller than the crop {self.image_size}")
        return self

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)


#: EfficientNet-Lite0's last five weighted stages all work at 1/32 of the input size: the most side levels.
MAX_SIDE_LEVELS = 5


class BackboneConfig(StrictModel):
    """The feature extractor: a named architecture or a user's own module ("custom")."""

    name: Literal["conv4", "resnet12", "efficientnet-lite0", "mlp", "custom"] = "conv4"
    hidden: int = Field(64, ge=1, description="conv4: filters per block")
    pooled_blocks: int = Field(4, ge=0, le=4, description="conv4: how many blocks end in 2x2 max-pooling")
    flatten: bool = Field(
        True, description="False keeps feature maps (Relation Networks); efficientnet-lite0 average-pools instead"
    )
    widths: tuple[int, ...] = Field((64, 160, 320, 640), description="resnet12: channels per stage")
    description: str = Field("", description="custom: what the user's module is (informational)")
    in_features: int = Field(1, ge=1, description="mlp: input vector size (inputs are [B, in_features])")
    layers: tuple[int, ...] = Field((40, 40), description="mlp: hidden widths (ReLU after each)")
    pretrained: bool = Field(
        True, description="efficientnet-lite0: start from the bundled ImageNet weights (False: random init)"
    )
    side_levels: tuple[float, ...] = Field(
        (),
        description="efficientnet-lite0: weights of the last blocks' pooled outputs, kept beside the head's features "
        "(the last block's first; ProtoNet L2-normalises and weighs each; () for the head alone)",
    )

    @field_validator("side_levels")
    @classmethod
    def _positive_finite_weights(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > MAX_SIDE_LEVELS:
            raise ValueError(f"at most {MAX_SIDE_LEVELS} side levels (the blocks at 1/32 of the input size)")
        if not all(0 < weight < float("inf") for weight in value):
            raise ValueError("every side level weight must be > 0 and finite")
        return value

    @model_validator(mode="after")
    def _side_levels_need_efficientnet(self) -> BackboneConfig:
        if self.side_levels and self.name != "efficientnet-lite0":
            raise ValueError(f"side_levels are for efficientnet-lite0, not {self.name}")
        return self

    @property
    def pretrained_weights(self) -> bool:
        """Whether a new backbone of this config starts from trained weights (so training must beat them)."""
        return self.name == "efficientnet-lite0" and self.pretrained


class AccuracyResult(StrictModel):
    """One evaluation figure with its 95% confidence interval."""

    n_way: int
    k_shot: int
    q_queries: int
    episodes: int
    accuracy: float
    ci95: float
    split: str = "test"
    seed: int = 0
    #: the held-out set the episodes were drawn from, e.g. "omniglot-evaluation" (None: the training dataset's split)
    dataset: str | None = None
    #: every episode's classes from one group (an Omniglot alphabet), as in Lake's runs
    within_group: bool = False
    #: the queries were scored together, refining the task (``predict(..., transductive=True)``)
    transductive: bool = False
    #: ``adapt``'s options the tasks were adapted with (e.g. ``{"finetune": "auto"}``)
    adapt_options: dict[str, Any] = Field(default_factory=dict)


class TrainingInfo(StrictModel):
    """Where a checkpoint's weights came from, so results can be reproduced."""

    dataset: str
    split_seed: int | None = None
    train_classes: int | None = None
    episodes: int = 0
    n_way: int | None = None
    k_shot: int | None = None
    q_queries: int | None = None
    seed: int | None = None
    best_val_accuracy: float | None = None
    extra: dict[str, object] = Field(default_factory=dict)
    init_training: TrainingInfo | None = Field(
        None, description="the training record of the checkpoint these weights started from (`fewshot train --init`)"
    )


class LakeRunsResult(StrictModel):
    """Lake's 20-run one-shot challenge: accuracy over the 400 test images."""

    runs: int
    test_images: int
    correct: int
    accuracy: float
    per_run_errors: list[int] = Field(default_factory=list)
    #: each run's test images were scored together (``predict(..., transductive=True)``)
    transductive: bool = False
    #: ``adapt``'s options each run's task was adapted with (e.g. ``{"finetune": "auto"}``)
    adapt_options: dict[str, Any] = Field(default_factory=dict)


class Provenance(StrictModel):
    """What is known about a learner's weights: how they were trained and what they scored."""

    training: TrainingInfo | None = None
    results: list[AccuracyResult] = Field(default_factory=list)
    lake_runs: LakeRunsResult | None = None

    def record(self, result: AccuracyResult) -> None:
        """Add a result, replacing an earlier one of the same protocol."""

        def protocol(r: AccuracyResult) -> tuple[object, ...]:
            adapted = (r.transductive, sorted(r.adapt_options.items()))
            return (r.n_way, r.k_shot, r.q_queries, r.split, r.dataset, r.within_group, *adapted)

        kept = [r for r in self.results if protocol(r) != protocol(result)]
        self.results = sorted([*kept, result], key=lambda r: (r.dataset or "", r.split, r.n_way, r.k_shot))


def describe_settings_error(exc: ValidationError, config_model: type[BaseModel], method: str) -> str:
    """``invalid settings for METHOD: ...`` and, where a name is none of its settings, every setting with its
    default, so that a typo in ``--set`` or ``fs.create`` is answered with what the method does take."""
    message = f"invalid settings for {method}: {describe_validation_error(exc)}"
    if any(error["type"] == "extra_forbidden" for error in exc.errors()):
        defaults = ", ".join(
            f"{name}={json.dumps(field.get_default(call_default_factory=True), default=str)}"
            for name, field in config_model.model_fields.items()
        )
        message += f"; the settings of {method} (defaults): {defaults}"
    return message


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: message; ...``."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
