"""Fine-tuning a backbone's last stages: the frozen prefix is cached, untouched, and equivalent."""

import numpy as np
import pytest
import torch
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.data.folders import scan_class_folders, split_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.progress import reporting_progress
from fewshot_sdk.train.evaluate import evaluate_episodes
from fewshot_sdk.train.loop import TrainConfig, meta_train

TINY = TrainConfig(episodes=6, n_way=5, k_shot=1, q_queries=2, val_every=3, val_episodes=4, lr=1e-2, frozen_stages=2)


def test_frozen_stages_keep_their_weights_and_the_rest_learns(omniglot_splits):
    torch.manual_seed(0)
    learner = fs.create("protonet")
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    meta_train(learner, omniglot_splits.train, omniglot_splits.val, TINY.model_copy(update={"batchnorm": "frozen"}))
    after = learner.state_dict()
    frozen = [k for k in before if k.startswith(("backbone.body.0.", "backbone.body.1."))]
    trained = [k for k in before if k.startswith("backbone.body.3.0.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    # batchnorm="frozen": the running statistics of the trained stages did not move either
    assert torch.equal(before["backbone.body.3.1.running_mean"], after["backbone.body.3.1.running_mean"])
    assert all(p.requires_grad for p in learner.parameters())  # the freeze ends with training


def test_more_frozen_stages_than_the_backbone_has_is_refused(omniglot_splits):
    with pytest.raises(fs.InputError, match="has 4 stages"):
        meta_train(
            fs.create("protonet"),
            omniglot_splits.train,
            omniglot_splits.val,
            TINY.model_copy(update={"frozen_stages": 5}),
        )


def test_evaluation_that_embeds_each_image_once_scores_exactly_like_per_episode_embedding(omniglot_splits):
    torch.manual_seed(1)
    learner = fs.create("protonet", feature_norm="l2", temperature=0.1)
    cached = evaluate_episodes(learner, omniglot_splits.test, 5, 1, 5, episodes=20, seed=4)
    learner.task_independent_embedding = False  # the per-episode path
    direct = evaluate_episodes(learner, omniglot_splits.test, 5, 1, 5, episodes=20, seed=4)
    assert cached.accuracy == pytest.approx(direct.accuracy, abs=1e-12)


def test_inference_in_chunks_equals_one_batch_and_reports_progress():
    torch.manual_seed(2)
    learner = fs.create("protonet")
    x = torch.randn(10, 1, 28, 28)
    with torch.inference_mode():
        whole = learner.inference_learner().backbone(x)
        learner.backbone.inference_chunk = 4
        seen = []
        with reporting_progress(lambda done, total: seen.append((done, total))):
            chunked = learner.inference_learner().backbone(x)  # the twin's chunks are the backbone's
    torch.testing.assert_close(chunked, whole)
    assert seen == [(4, 10), (8, 10), (10, 10)]


def test_centred_l2_subtracts_the_class_balanced_training_mean_then_normalises():
    torch.manual_seed(3)
    learner = fs.create("protonet", feature_norm="centered-l2").double()
    train = LabelledImages(torch.randn(9, 1, 28, 28, dtype=torch.float64), torch.tensor([0] * 6 + [1] * 3), ("a", "b"))
    learner.calibrate(train)
    with torch.no_grad():
        f = learner.backbone(train.images)
        mean = (f[:6].mean(0) + f[6:].mean(0)) / 2  # each class counts once, however many images it has
        torch.testing.assert_close(learner.feature_mean, mean)
        q = torch.randn(4, 1, 28, 28, dtype=torch.float64)
        expected = torch.nn.functional.normalize(learner.backbone(q) - mean, dim=1)
        torch.testing.assert_close(learner.embed(q), expected)
        assert torch.allclose(learner.embed(q).norm(dim=1), torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("norm", ["l2", "centered-l2"])
def test_normalised_prototypes_export_with_the_same_probabilities(norm, tmp_path):
    torch.manual_seed(4)
    learner = fs.create("protonet", feature_norm=norm, temperature=0.05)
    if norm == "centered-l2":
        learner.feature_mean.normal_()
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    state = learner.adapt_tensors(x, y, 3)
    q = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        exported = learner.export_module(state)(q)[0].softmax(-1)
        torch.testing.assert_close(exported, learner.score(state, q).softmax(-1), rtol=1e-4, atol=1e-5)
    learner.save(tmp_path / "ckpt")
    reloaded = fs.load(tmp_path / "ckpt")
    if norm == "centered-l2":
        torch.testing.assert_close(reloaded.feature_mean, learner.feature_mean)


def _class_folders(root, names):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_linked_classes_stay_on_one_side_of_every_split(tmp_path):
    names = ["Faces", "Faces_easy", *(f"class{i:02d}" for i in range(10))]
    classes = scan_class_folders(_class_folders(tmp_path, names))
    for seed in range(8):
        splits = split_class_folders(classes, seed, n_val=2, n_test=2)
        sides = [side for side, members in splits.items() if "Faces" in members]
        assert len(sides) == 1 and "Faces_easy" in splits[sides[0]]
        assert sum(len(members) for members in splits.values()) == len(names)
