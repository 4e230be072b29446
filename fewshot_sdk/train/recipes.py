"""Ready training recipes: what ``fewshot train`` runs, so a checkpoint's command reproduces it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fewshot_sdk.config import Provenance, TrainingInfo, describe_settings_error
from fewshot_sdk.data.images import Preprocessor
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.data.omniglot import (
    OmniglotSplits,
    has_full_set,
    load_background_characters,
    load_evaluation_characters,
    minimal_split_alphabets,
    split_alphabets,
    split_characters,
)
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.task.domain import HANDWRITTEN
from fewshot_sdk.train.loop import TrainConfig, TrainResult, meta_train

MINIMAL_OMNIGLOT = "omniglot-background-small1+small2"
FULL_OMNIGLOT = "omniglot-background"
FULL_OMNIGLOT_TEST = "omniglot-evaluation"
#: The progress records' validation figure, whichever the objective reports (accuracy or MSE).
VALIDATION_FIGURES = ("val_accuracy", "val_mse")


class FullOmniglotSplits:
    """The papers' protocol: train on background alphabets, validate on held-out background alphabets, test on
    the evaluation set. Each split is decoded on first use (evaluating reads only the evaluation set).

    Validation alphabets are drawn on ``split_seed`` from the background alphabets outside the minimal splits, so a
    warm start from a minimal-split checkpoint never validates on characters it trained on.
    """

    def __init__(self, data: str | Path, preprocessor: Preprocessor, split_seed: int, val_alphabets: int = 5) -> None:
        self.data, self.preprocessor, self.split_seed, self.n_val = Path(data), preprocessor, split_seed, val_alphabets

    @cached_property
    def _train_val(self) -> tuple[LabelledImages, LabelledImages, list[str]]:
        characters = load_background_characters(self.data, self.preprocessor)
        return split_alphabets(characters, self.split_seed, self.n_val, minimal_split_alphabets(self.data))

    @property
    def train(self) -> LabelledImages:
        return self._train_val[0]

    @property
    def val(self) -> LabelledImages:
        return self._train_val[1]

    @property
    def val_alphabets(self) -> list[str]:
        return self._train_val[2]

    @cached_property
    def test(self) -> LabelledImages:
        return load_evaluation_characters(self.data, self.preprocessor)


def omniglot_splits(data: str | Path, learner: Learner, split_seed: int = 0) -> OmniglotSplits | FullOmniglotSplits:
    """The full protocol where the folder holds the background and evaluation sets, else the minimal splits
    split train / val / test by character, at the learner's resolution."""
    if has_full_set(data):
        return FullOmniglotSplits(data, learner.preprocessor, split_seed)
    return split_characters(load_background_characters(data, learner.preprocessor), split_seed=split_seed)


def train_on_splits(
    learner: Learner,
    splits: OmniglotSplits | FullOmniglotSplits | FolderSplits,
    dataset: str,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_new_best: Callable[[Learner], None] | None = None,
) -> TrainResult:
    """Meta-train on class-disjoint splits and record how in the learner's provenance.

    A learner trained before (``warm_start``) continues from its weights; its earlier record is kept as
    ``init_training``.
    """
    previous = learner.provenance.training
    if previous is not None and previous.dataset == dataset and previous.split_seed not in (None, splits.split_seed):
        raise InputError(
            f"the initial checkpoint was trained on {dataset} with split seed {previous.split_seed}; continuing "
            f"with split seed {splits.split_seed} would train on its validation/test classes. "
            f"Use --split-seed {previous.split_seed}"
        )
    settings: dict[str, Any] = {"train_config": config.model_dump(mode="json")}
    if isinstance(splits, FolderSplits):  # which classes are held out, by name, so the test set is known for good
        held_out = splits.class_names()
        settings["held_out_classes"] = {"val": held_out["val"], "test": held_out["test"]}
    if isinstance(splits, FullOmniglotSplits):
        settings["val_alphabets"] = splits.val_alphabets
    record = TrainingInfo(
        dataset=dataset,
        split_seed=splits.split_seed,
        train_classes=splits.train.num_classes,
        **config.model_dump(include={"episodes", "n_way", "k_shot", "q_queries", "seed"}),
        extra={**settings, "status": "in progress"},
        init_training=previous,
    )
    learner.provenance.training = record  # what a best-so-far checkpoint written mid-run says of itself
    curve: dict[str, float] = {}  # validation figure by episode: a run stopped by hand still says how it went

    def progress(episode: int, figures: dict[str, float]) -> None:
        curve.update({str(episode): round(v, 4) for k, v in figures.items() if k in VALIDATION_FIGURES})
        if on_progress is not None:
            on_progress(episode, figures)

    def new_best(best: Learner) -> None:
        episode = max(curve, key=int)
        best.provenance.training = record.model_copy(
            update={
                "best_val_accuracy": curve[episode],
                "extra": {**record.extra, "best_episode": int(episode), "val_curve": dict(curve)},
            }
        )
        if on_new_best is not None:
            on_new_best(best)

    result = meta_train(
        learner,
        splits.train,
        splits.val,
        config,
        on_progress=progress,
        on_new_best=new_best,
        validate_initial=previous is not None or learner.backbone_config.pretrained_weights,
    )
    outcome = {"best_episode": result.best_episode, "seconds": round(result.seconds, 1), "val_curve": curve}
    learner.provenance.training = record.model_copy(
        update={"best_val_accuracy": result.best_value, "extra": {**settings, **outcome}}
    )
    return result


def warm_start(init: str | Path, settings: dict[str, Any] | None = None) -> Learner:
    """A trained learner to meta-train further, with some method settings changed (e.g. MAML's ``inner_lr``).

    The weights, backbone and preprocessing come from ``init``; the old evaluation results are dropped (they
    describe weights that training is about to change) and its training record is kept, so the new checkpoint says
    where it started.
    """
    from fewshot_sdk.io.zoo import PREPROCESS_KEYS, load

    base = load(init)
    settings = dict(settings or {})
    cls = type(base)
    # A method setting may share a preprocessing key's name (Relation's ``channels``): it is the method's.
    fixed = sorted(key for key in settings if key in PREPROCESS_KEYS and key not in cls.Config.model_fields)
    if fixed:
        raise InputError(
            f"{', '.join(fixed)} cannot change when training from --init {init}: its weights were trained on "
            f"{base.preprocess_config.channels}-channel {base.preprocess_config.image_size} inputs"
        )
    try:
        config = cls.Config(**{**base.config.model_dump(), **settings})
    except ValidationError as exc:
        raise InputError(describe_settings_error(exc, cls.Config, base.method)) from None
    learner = cls(config, base.backbone_config, base.preprocess_config).eval()
    try:
        learner.load_state_dict(base.state_dict())
    except RuntimeError:
        raise InputError(
            f"settings {sorted(settings)} change the shape of {base.method}'s weights, so --init {init} "
            "cannot be loaded into them; keep those settings or train from scratch"
        ) from None
    learner.provenance = Provenance(training=base.provenance.training)
    return learner


#: Batch-norm buffers that only a layer with running averages holds.
RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def with_backbone_from(source: str | Path, method: str, settings: dict[str, Any] | None = None) -> Learner:
    """A new ``method`` learner whose backbone (architecture, weights, preprocessing) is ``source``'s.

    For a method whose embedding has to be learnt from scratch as well as its own parts (MANN's controller and
    memory, MetaNet's meta-learner), starting the embedding from a metric learner trained on the same data leaves the
    short CPU budget to the method's own parts; a gradient method (Reptile) starts its initialisation from features
    that already separate characters. The source's training record becomes ``init_training``, marked
    ``backbone_only``, so the checkpoint says where its embedding came from.
    """
    from fewshot_sdk.io.zoo import PREPROCESS_KEYS, create, load

    base = load(source)
    settings = dict(settings or {})
    fixed = sorted(key for key in settings if key in PREPROCESS_KEYS)
    if fixed:
        raise InputError(f"{', '.join(fixed)} come from --backbone-from {source} and cannot be set")
    learner = create(method, backbone=base.backbone_config, preprocess=base.preprocess_config, **settings)
    # A gradient method's per-task batch norm normalises by each task's own batch, so the source's
    # running averages have no place to go; its convolutions and affine batch-norm weights do.
    wanted = learner.backbone.state_dict()
    state = {
        name: value
        for name, value in base.backbone.state_dict().items()
        if name in wanted or name.rsplit(".", 1)[-1] not in RUNNING_STATISTICS
    }
    try:
        learner.backbone.load_state_dict(state)
    except RuntimeError:
        raise InputError(
            f"{learner.method}'s backbone cannot take {source}'s weights (a {base.method} backbone with other "
            "layers, e.g. per-task batch norm); train it from scratch or from a checkpoint of the same family"
        ) from None
    if base.provenance.training is not None:
        extra = {**base.provenance.training.extra, "backbone_only": str(source)}
        learner.provenance = Provenance(training=base.provenance.training.model_copy(update={"extra": extra}))
    return learner


def is_omniglot(data: str | Path) -> bool:
    path = Path(data)
    return path.is_file() or any(path.glob("images_background*"))


class FolderSplits:
    """A class-per-folder dataset split by class; each split's images are decoded on first use.

    Photo datasets are large once preprocessed (Caltech-101 at 224x224 is 5 GB in float32), so evaluating the test
    classes must not decode the training classes.
    """

    def __init__(self, files: dict[str, dict[str, list[Path]]], preprocessor: Preprocessor, split_seed: int) -> None:
        self.files = files
        self.preprocessor = preprocessor
        self.split_seed = split_seed

    def _load(self, split: str) -> LabelledImages:
        return LabelledImages.from_mapping(self.files[split], self.preprocessor)

    @cached_property
    def train(self) -> LabelledImages:
        return self._load("train")

    @cached_property
    def val(self) -> LabelledImages:
        return self._load("val")

    @cached_property
    def test(self) -> LabelledImages:
        return self._load("test")

    def class_names(self) -> dict[str, list[str]]:
        return {split: list(classes) for split, classes in self.files.items()}


def folder_splits(data: str | Path, learner: Learner, split_seed: int = 0, val_fraction: float = 0.2) -> FolderSplits:
    """A class-per-folder dataset split by class into train / val / test (60 / 20 / 20 by default)."""
    return FolderSplits(folder_split_files(data, split_seed, val_fraction), learner.preprocessor, split_seed)


def folder_split_files(
    data: str | Path, split_seed: int = 0, val_fraction: float = 0.2
) -> dict[str, dict[str, list[Path]]]:
    """``{split: {class: files}}`` of a class-per-folder dataset, before any image is decoded."""
    from fewshot_sdk.data.folders import linked_class_groups, scan_class_folders, split_class_folders

    classes = scan_class_folders(data)
    held_out = max(2, round(val_fraction * len(linked_class_groups(list(classes)))))
    return split_class_folders(classes, split_seed, n_val=held_out, n_test=held_out)


def folder_preprocess_settings(data: str | Path, split_seed: int = 0) -> dict[str, Any]:
    """Channels, mean and std for a network trained from scratch on class folders, from its training classes."""
    from fewshot_sdk.data.folders import image_statistics

    files = [path for paths in folder_split_files(data, split_seed)["train"].values() for path in paths]
    channels, mean, std = image_statistics(files)
    return {"channels": channels, "mean": mean, "std": std}


def dataset_splits(
    data: str | Path, learner: Learner, split_seed: int | None = None
) -> OmniglotSplits | FullOmniglotSplits | FolderSplits:
    """Omniglot's background splits, or any class-per-folder dataset, split by class; ``split_seed`` defaults to the
    learner's own, so its held-out classes stay held out."""
    training = learner.provenance.training
    if split_seed is None:  # the split it was trained on; 0, the default split, when it has no record
        split_seed = training.split_seed if training is not None and training.split_seed is not None else 0
    if is_omniglot(data):
        return omniglot_splits(data, learner, split_seed)
    return folder_splits(data, learner, split_seed)


def train_on_dataset(
    learner: Learner,
    data: str | Path,
    config: TrainConfig,
    split_seed: int | None = None,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_new_best: Callable[[Learner], None] | None = None,
) -> TrainResult:
    """Meta-train on Omniglot, class folders or sinusoids; ``split_seed`` defaults to the learner's own."""
    from fewshot_sdk.train.regression import is_sinusoid, train_sinusoid

    if is_sinusoid(data):  # "sinusoid": MAML's regression family, generated, not read from disk
        return train_sinusoid(learner, config, on_progress, on_new_best)
    splits = dataset_splits(data, learner, split_seed)
    if isinstance(splits, FolderSplits):
        name = f"folders:{Path(data).name}"
    else:
        name = FULL_OMNIGLOT if isinstance(splits, FullOmniglotSplits) else MINIMAL_OMNIGLOT
        learner.domain = HANDWRITTEN
    return train_on_splits(learner, splits, name, config, on_progress, on_new_best)
