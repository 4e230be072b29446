"""Out-of-domain inputs: say so, once per learner, when a model is given images unlike its training data.

The handwriting models (1x28x28 greyscale glyphs, ``learner.domain`` in ``config.json``) still
*run* on photos, which the preprocessor turns into 28x28 grey, but answer noise. The check rides
on decoding: a learner's preprocessor shows its :class:`DomainWatch` each image it decodes
(tensors are model-ready, never decoded), a handwriting model's watch notes the first that looks
like a photo (:func:`fewshot_sdk.imageio.photo_description`) and a photo model's returns at once;
no file is read twice. ``adapt``, ``predict`` and ``add_classes`` then call
:meth:`DomainWatch.warn`: one :class:`DomainWarning` per learner, naming the model to use.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from fewshot_sdk.imageio import photo_description
from fewshot_sdk.model_card import input_shape

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DomainWarning", "DomainWatch", "name_learner"]

HANDWRITTEN = "handwritten-characters"
#: The bundled model to use for photos.
PHOTO_MODEL = "protonet-photos"
#: Domains whose models warn when given photos.
PHOTO_SENSITIVE_DOMAINS = frozenset({HANDWRITTEN})


class DomainWarning(UserWarning):
    """A model was given inputs unlike the data it was trained on (e.g. photos to a handwriting model)."""


class DomainWatch:
    """What a learner's preprocessor has decoded that its domain does not fit, and whether it said so."""

    def __init__(self, learner: Any) -> None:
        self.learner = learner
        #: The name the learner was loaded by (``"protonet-omniglot"``), for the warning's wording.
        self.name: str | None = None
        self.found: str | None = None
        self.warned = False

    def __call__(self, image: Image.Image) -> None:
        """Look at one decoded image (the preprocessor's call), until one looks like a photo."""
        learner = self.learner
        if self.found is None and getattr(learner, "domain", None) in PHOTO_SENSITIVE_DOMAINS:
            self.found = photo_description(image, learner.preprocess_config.image_size)

    def warn(self, stacklevel: int = 2) -> None:
        """One :class:`DomainWarning` per learner, once a photo was seen; ``stacklevel`` as for ``warnings.warn``."""
        if self.found is None or self.warned:
            return
        self.warned = True
        learner = self.learner
        preprocess = learner.preprocess_config
        kind = "greyscale" if preprocess.channels == 1 else "RGB"
        message = (
            f"{self.name or f'this {learner.method} model'} is a {learner.domain} model "
            f"({input_shape(preprocess)} {kind}); these look like photos ({self.found}): "
            f"use fs.load('{PHOTO_MODEL}') / --model {PHOTO_MODEL}"
        )
        warnings.warn(message, DomainWarning, stacklevel=stacklevel + 1)


def name_learner(learner: Any, name: str) -> None:
    """Remember the name a learner was loaded by, for the warning's wording."""
    learner.domain_watch.name = str(name)
