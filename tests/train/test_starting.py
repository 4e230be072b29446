"""The learner a training run starts from follows from the data, and contradictory starts are refused."""

import pytest
import torch

from fewshot_sdk.errors import InputError
from fewshot_sdk.train.starting import starting_learner


def test_a_new_learner_fits_its_data(minimal_omniglot_dir, image_folder):
    regressor = starting_learner("sinusoid", "maml")
    assert regressor.config.task == "regression" and regressor.backbone_config.name == "mlp"
    glyphs = starting_learner(minimal_omniglot_dir)
    assert glyphs.method == "protonet" and glyphs.preprocess_config.mean == (0.92,)  # the method's own defaults
    for name in ("dark", "light"):  # a class-folder dataset large enough for a train / val / test split
        for extra in range(4):
            (image_folder / f"{name}{extra}").mkdir()
            for image in (image_folder / name).glob("*.png"):
                (image_folder / f"{name}{extra}" / image.name).write_bytes(image.read_bytes())
    settings = {"metric": "cosine"}
    folders = starting_learner(image_folder, settings=settings)
    assert folders.preprocess_config.channels == 1 and folders.preprocess_config.mean != (0.92,)
    assert folders.config.metric == "cosine" and settings == {"metric": "cosine"}  # the caller's dict is kept


def test_contradictory_starts_are_refused_with_the_flag_to_drop(minimal_omniglot_dir, tmp_path):
    with pytest.raises(InputError, match="--backbone-from"):
        starting_learner(minimal_omniglot_dir, init="protonet-omniglot", backbone_from="protonet-omniglot")
    with pytest.raises(InputError, match="--backbone cannot be combined with --init"):
        starting_learner(minimal_omniglot_dir, init="protonet-omniglot", backbone="resnet12")
    torch.manual_seed(0)
    with pytest.raises(InputError, match="does not match --init"):
        starting_learner(minimal_omniglot_dir, method="maml", init="protonet-omniglot")
