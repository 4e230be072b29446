"""Out-of-domain inputs: say so, once per learner, when a model is given images unlike its training data.

A learner knows what its weights were trained on (``learner.domain``, saved in
``config.json``) and the input it takes (``learner.preprocess_config``). The
handwriting models (1x28x28 greyscale Omniglot glyphs) still *run* on photos, since
the preprocessor turns anything into 28x28 grey, but their answers are then noise.
:func:`check_images` looks at the images as the user gave them, before
preprocessing (paths, PIL images, arrays; tensors are model-ready and skipped), and
when they look like photos it issues one :class:`DomainWarning` per learner naming
the model to use instead.

The check is cheap: the size and mode come from the file header, and the colour
test reads a 32x32 nearest-neighbour subsample of at most 16 images per call
(JPEGs are decoded at reduced scale). It never raises: an unreadable item is left
to the preprocessor, which names it in its own error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fewshot_sdk.data.folders import even_sample
from fewshot_sdk.imageio import COLOUR_SAMPLE_SIDE, MAX_IMAGE_PIXELS, is_colourful, looks_colourful

if TYPE_CHECKING:
    from fewshot_sdk.config import BackboneConfig, PreprocessConfig

__all__ = ["DomainWarning", "check_images", "describe_input", "name_learner", "photo_description"]

HANDWRITTEN = "handwritten-characters"
#: The bundled model to use for photos.
PHOTO_MODEL = "protonet-photos"
#: Domains whose models warn when given photos.
PHOTO_SENSITIVE_DOMAINS = frozenset({HANDWRITTEN})

#: Both sides more than this many times the model's input: not a glyph. (Omniglot's own
#: 105x105 scans are 3.75x a 28x28 input and must pass.)
MAX_SIZE_RATIO = 4.0
#: Images looked at per call, spread over the batch / support set.
SAMPLE_IMAGES = 16
#: Side of the subsample the colour test reads (JPEGs are decoded near it).
SAMPLE_SIDE = COLOUR_SAMPLE_SIDE

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})

#: The attributes a learner carries for this module: the name it was loaded by, and whether it warned.
NAME_ATTRIBUTE = "loaded_as"
WARNED_ATTRIBUTE = "_domain_warned"


class DomainWarning(UserWarning):
    """A model was given inputs unlike the data it was trained on (e.g. photos to a handwriting model)."""


def name_learner(learner: Any, name: str) -> None:
    """Remember the name a learner was loaded by (``"protonet-omniglot"``), for the warning's wording."""
    learner.__dict__[NAME_ATTRIBUTE] = str(name)


def describe_input(backbone: BackboneConfig, preprocess: PreprocessConfig) -> str:
    """The input a model takes: ``"1x28x28"`` (channels x height x width), or ``"1"`` for a vector MLP."""
    if backbone.name == "mlp":
        return str(backbone.in_features)
    return _input_shape(preprocess)


def check_images(learner: Any, images: object, stacklevel: int = 3) -> None:
    """Warn once per learner (:class:`DomainWarning`) when a handwriting model is given photos.

    ``images`` is what the user passed: one path / PIL image / array, or a sequence of
    them; tensors (and anything unreadable) are skipped. Never raises. Called by the API's
    entry points (``adapt``, ``predict``, ``add_classes``); ``stacklevel`` names the user's line.
    A learner trained on photos, or that warned already, returns at the first line.
    """
    if getattr(learner, "domain", None) not in PHOTO_SENSITIVE_DOMAINS or learner.__dict__.get(WARNED_ATTRIBUTE):
        return
    preprocess = learner.preprocess_config
    found = None
    for item in even_sample(_as_items(images), SAMPLE_IMAGES):
        found = photo_description(item, preprocess)
        if found is not None:
            break
    if found is None:
        return
    learner.__dict__[WARNED_ATTRIBUTE] = True
    label = learner.__dict__.get(NAME_ATTRIBUTE) or f"this {learner.method} model"
    kind = "greyscale" if preprocess.channels == 1 else "RGB"
    message = (
        f"{label} is a {learner.domain} model ({_input_shape(preprocess)} {kind}); these look like photos "
        f"({found}): use fs.load('{PHOTO_MODEL}') / --model {PHOTO_MODEL}"
    )
    warnings.warn(message, DomainWarning, stacklevel=stacklevel)


def photo_description(item: object, preprocess: PreprocessConfig) -> str | None:
    """``"RGB 451x300"`` when ``item`` looks like a photo to a model taking ``preprocess``'s input, else None."""
    try:
        if isinstance(item, np.ndarray):
            return _array_description(item, preprocess)
        if isinstance(item, Image.Image):
            return _image_description(item, preprocess, own=False)
        if isinstance(item, (str, os.PathLike)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(item) as image:  # reads the header only
                    return _image_description(image, preprocess, own=True)
    except Exception:  # the preprocessor reports unreadable items with its own message
        return None
    return None  # tensors are model-ready; anything else is the preprocessor's to refuse


# ----------------------------------------------------------------- internals
def _input_shape(preprocess: PreprocessConfig) -> str:
    height, width = preprocess.image_size
    return f"{preprocess.channels}x{height}x{width}"


def _as_items(images: object) -> list[object]:
    if isinstance(images, (str, bytes, os.PathLike, Image.Image, np.ndarray)):
        return [images]
    if isinstance(images, Sequence):
        return list(images)
    return [images]  # a tensor batch or an unknown type: skipped item by item


def _image_description(image: Image.Image, preprocess: PreprocessConfig, own: bool) -> str | None:
    width, height = image.size
    grey = image.mode in _GREY_MODES or image.mode.startswith("I;")
    if _too_large(width, height, preprocess):  # a photo whatever its colours: don't decode a file for them
        return f"{'greyscale' if grey else 'RGB'} {width}x{height}"
    if grey or width * height > MAX_IMAGE_PIXELS:
        return None
    if own:
        image.draft("RGB", (SAMPLE_SIDE, SAMPLE_SIDE))  # JPEG: decode at 1/2..1/8 scale; others: no-op
    return f"RGB {width}x{height}" if looks_colourful(image) else None


def _array_description(array: np.ndarray, preprocess: PreprocessConfig) -> str | None:
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        return None
    height, width = array.shape[:2]
    colour = False
    if array.ndim == 3 and array.shape[2] in (3, 4):
        step_y, step_x = max(1, height // SAMPLE_SIDE), max(1, width // SAMPLE_SIDE)
        sample = array[::step_y, ::step_x, :3]
        if sample.dtype == np.uint16:
            sample = (sample >> 8).astype(np.uint8)
        elif sample.dtype != np.uint8:  # floats in [0, 1], as the preprocessor reads them
            sample = (np.clip(np.nan_to_num(sample.astype(np.float32)), 0.0, 1.0) * 255).astype(np.uint8)
        colour = is_colourful(sample)
    if colour or _too_large(width, height, preprocess):
        return f"{'RGB' if colour else 'greyscale'} {width}x{height}"
    return None


def _too_large(width: int, height: int, preprocess: PreprocessConfig) -> bool:
    """Both sides more than :data:`MAX_SIZE_RATIO` times the model's input."""
    in_height, in_width = preprocess.image_size
    return min(width / in_width, height / in_height) > MAX_SIZE_RATIO
