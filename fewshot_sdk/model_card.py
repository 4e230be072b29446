"""What a checkpoint's ``config.json`` says about its model (method, domain, input, recorded results), without torch.

``checkpoint.LearnerConfig`` validates the whole file, but it lives beside the weights' reader, which imports
torch (seconds of start-up). Listing the bundled models (``fewshot models``) reads only the fields below,
validated by the same config models (:mod:`fewshot_sdk.config`); the other fields are left unread. A test
keeps these fields' types and defaults those of ``LearnerConfig``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fewshot_sdk.config import BackboneConfig, PreprocessConfig, Provenance, describe_validation_error
from fewshot_sdk.errors import CheckpointError

#: The file ``checkpoint.CONFIG_FILE`` names (the same string; that module imports torch).
CONFIG_FILE = "config.json"


class ModelCard(BaseModel):
    """The fields of ``checkpoint.LearnerConfig`` that describe a model to a person."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    method: str
    domain: str = "unspecified"
    backbone: BackboneConfig
    preprocess: PreprocessConfig
    provenance: Provenance = Field(default_factory=Provenance)

    @property
    def input_size(self) -> str:
        return describe_input(self.backbone, self.preprocess)


def read_model_card(folder: Path) -> ModelCard:
    """The card of the checkpoint folder ``folder``; a missing or malformed file is a :class:`CheckpointError`."""
    path = folder / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: is {folder} a fewshot-sdk checkpoint folder?") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt") from None
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(f"{path} is not a valid LearnerConfig: {describe_validation_error(exc)}") from None


def describe_input(backbone: BackboneConfig, preprocess: PreprocessConfig) -> str:
    """The input a model takes: ``"1x28x28"`` (channels x height x width), or ``"1"`` for a vector MLP."""
    if backbone.name == "mlp":
        return str(backbone.in_features)
    return input_shape(preprocess)


def input_shape(preprocess: PreprocessConfig) -> str:
    height, width = preprocess.image_size
    return f"{preprocess.channels}x{height}x{width}"
