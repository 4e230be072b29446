import numpy as np
import pytest
import torch
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.config import AccuracyResult
from fewshot_sdk.errors import InputError
from fewshot_sdk.train.loop import TrainConfig, meta_train
from fewshot_sdk.train.recipes import dataset_splits, train_on_dataset, warm_start, with_backbone_from


def _folder_dataset(root, classes=10, size=16):
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


TINY = TrainConfig(
    episodes=2, n_way=2, k_shot=1, q_queries=1, val_every=2, val_episodes=1, val_n_way=2, val_q_queries=1
)


def test_any_class_per_folder_dataset_trains_with_a_class_disjoint_split(tmp_path):
    _folder_dataset(tmp_path)
    torch.manual_seed(0)
    learner = fs.create("protonet", image_size=16)
    splits = dataset_splits(tmp_path, learner, split_seed=3)
    names = [set(s.class_names) for s in (splits.train, splits.val, splits.test)]
    assert [len(n) for n in names] == [6, 2, 2] and not (names[0] & names[1] or names[0] & names[2])
    saved_mid_run = []
    train_on_dataset(
        learner, tmp_path, TINY, split_seed=3, on_new_best=lambda best: saved_mid_run.append(best.provenance.training)
    )
    # a checkpoint written mid-run says so, and how far it got: a run stopped by hand keeps an honest record
    mid_run = saved_mid_run[0]
    assert mid_run.extra["status"] == "in progress" and mid_run.extra["best_episode"] == 2
    assert mid_run.extra["val_curve"] == {"2": mid_run.best_val_accuracy}
    training = learner.provenance.training
    assert "status" not in training.extra and training.extra["best_episode"] == 2
    assert training.extra["val_curve"] == {"2": round(training.best_val_accuracy, 4)}
    assert training.dataset == f"folders:{tmp_path.name}" and training.split_seed == 3
    assert training.train_classes == 6 and training.episodes == 2


def test_warm_start_continues_from_the_checkpoint_and_keeps_its_training_record(tmp_path):
    data = _folder_dataset(tmp_path / "data")
    torch.manual_seed(0)
    base = fs.create("protonet", image_size=16)
    train_on_dataset(base, data, TINY, split_seed=3)
    base.provenance.results = [AccuracyResult(n_way=2, k_shot=1, q_queries=1, episodes=1, accuracy=1.0, ci95=0.0)]
    base.save(tmp_path / "base")

    learner = warm_start(tmp_path / "base", {"metric": "cosine"})
    assert learner.config.metric == "cosine" and learner.preprocess_config.image_size == (16, 16)
    for name, tensor in base.state_dict().items():
        torch.testing.assert_close(learner.state_dict()[name], tensor, rtol=0, atol=0)
    assert learner.provenance.results == []  # they scored the old weights, not the ones about to be trained
    assert learner.provenance.training == base.provenance.training

    result = train_on_dataset(learner, data, TINY)  # no split seed given: the checkpoint's own
    assert learner.provenance.training.split_seed == 3
    assert [record["episode"] for record in result.history] == [0, 2]  # the starting weights are validated too
    assert "loss" not in result.history[0] and "loss" in result.history[1]
    assert learner.provenance.training.init_training == base.provenance.training


def test_warm_start_refuses_a_split_that_would_train_on_held_out_classes(tmp_path):
    data = _folder_dataset(tmp_path / "data")
    base = fs.create("protonet", image_size=16)
    train_on_dataset(base, data, TINY, split_seed=3)
    base.save(tmp_path / "base")
    with pytest.raises(InputError, match="--split-seed 3"):
        train_on_dataset(warm_start(tmp_path / "base"), data, TINY, split_seed=4)


def test_warm_start_refuses_settings_the_weights_cannot_follow(tmp_path):
    fs.create("maml", n_way=5).save(tmp_path / "maml")
    with pytest.raises(InputError, match="change the shape"):
        warm_start(tmp_path / "maml", {"n_way": 20})
    with pytest.raises(InputError, match="image_size cannot change"):
        warm_start(tmp_path / "maml", {"image_size": 32})
    assert warm_start(tmp_path / "maml", {"inner_lr": 0.1}).config.inner_lr == 0.1


def test_continued_training_keeps_the_starting_weights_unless_validation_improves(omniglot_splits, monkeypatch):
    torch.manual_seed(0)
    learner = fs.create("protonet")
    start = {name: tensor.clone() for name, tensor in learner.state_dict().items()}

    def ruin(episodes, optimizer, **_):  # every update destroys the embedding: all logits tie, accuracy = chance
        with torch.no_grad():
            for parameter in learner.parameters():
                parameter.zero_()
        optimizer.step()
        return {"loss": 0.0, "accuracy": 0.0}

    monkeypatch.setattr(learner, "train_step", ruin)
    config = TrainConfig(episodes=2, n_way=5, k_shot=1, q_queries=1, val_every=1, val_episodes=5)
    result = meta_train(learner, omniglot_splits.train, omniglot_splits.val, config, validate_initial=True)
    assert result.best_episode == 0 and result.history[0]["val_accuracy"] > result.history[1]["val_accuracy"]
    for name, tensor in start.items():
        torch.testing.assert_close(learner.state_dict()[name], tensor, rtol=0, atol=0)


def test_training_on_full_omniglot_validates_on_held_out_alphabets_and_records_them(omniglot_dir):
    torch.manual_seed(0)
    learner = fs.create("protonet")
    config = TINY.model_copy(update={"val_n_way": 20, "val_within_group": True, "val_episodes": 2})
    train_on_dataset(learner, omniglot_dir, config)
    training = learner.provenance.training
    assert training.dataset == "omniglot-background" and training.train_classes == 4 * (964 - 202)
    assert len(training.extra["val_alphabets"]) == 5 and learner.domain == "handwritten-characters"


def test_warm_start_keeps_a_method_setting_named_like_a_preprocessing_key():
    """Relation's ``channels`` (its module width) is not the images' channels."""
    learner = warm_start("relation-omniglot")
    assert learner.config.channels == fs.load("relation-omniglot").config.channels
    assert learner.preprocess_config.channels == 1
    assert warm_start("relation-omniglot", {"hidden": 8}).config.hidden == 8


def test_a_new_method_can_start_its_backbone_from_another_model_and_records_where_it_came_from():
    learner = with_backbone_from("protonet-omniglot", "mann", {"max_classes": 5})
    source = fs.load("protonet-omniglot")
    for name, tensor in source.backbone.state_dict().items():
        torch.testing.assert_close(learner.backbone.state_dict()[name], tensor)
    assert learner.method == "mann" and learner.config.max_classes == 5
    assert learner.preprocess_config == source.preprocess_config
    assert learner.provenance.training.extra["backbone_only"] == "protonet-omniglot"
    with pytest.raises(InputError, match="cannot take maml-omniglot's weights"):
        with_backbone_from("maml-omniglot", "protonet")  # per-task batch norm has no running averages to give
    with pytest.raises(InputError, match="image_size come from --backbone-from"):
        with_backbone_from("protonet-omniglot", "mann", {"image_size": 32})


def test_a_gradient_method_takes_a_metric_backbone_without_its_running_averages():
    # Per-task batch norm normalises by each task's batch: the convolutions and the affine
    # batch-norm weights carry over, the running averages are left behind.
    learner = with_backbone_from("protonet-omniglot", "reptile", {"n_way": 20})
    source = fs.load("protonet-omniglot").backbone.state_dict()
    state = learner.backbone.state_dict()
    assert not any(name.endswith("running_mean") for name in state)
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, source[name])
