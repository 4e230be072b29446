"""Images in, tensors out: loading, preprocessing, datasets and episode sampling."""

from fewshot_sdk.data.episodes import Episode, EpisodeSampler
from fewshot_sdk.data.images import ImageLike, Preprocessor, load_image
from fewshot_sdk.data.labelled import LabelledImages

__all__ = ["Episode", "EpisodeSampler", "ImageLike", "LabelledImages", "Preprocessor", "load_image"]
