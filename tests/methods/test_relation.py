import pytest
import torch
import torch.nn.functional as F
from method_support import accuracy_before_and_after_training, assert_refuses_bad_support, random_task

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.train.loop import TrainConfig


def test_feature_maps_class_maps_and_logits_have_the_papers_shapes():
    learner = fs.create("relation")
    assert learner.backbone.out_shape == (64, 7, 7)  # 28x28 -> 64x7x7 (two pooled blocks)
    x, y, q = random_task()
    state = learner.adapt_tensors(x, y, 3)
    assert state["class_maps"].shape == (3, 64, 7, 7)
    prediction = learner.adapt(fs.SupportSet.from_tensors(x, y)).predict(q)
    assert prediction.probs.shape == (5, 3) and prediction.indices.shape == (5,)
    torch.testing.assert_close(prediction.probs.sum(1), torch.ones(5))


def test_relation_scores_match_the_concatenated_pairs_of_the_paper_in_float64():
    learner = fs.create("relation").double()
    x, y, q = random_task(torch.float64, seed=1)
    state = learner.fit_task(x, y, 3)
    with torch.no_grad():
        maps = learner.backbone.features(x)
        class_maps = torch.stack([maps[y == c].sum(0) for c in range(3)])  # K-shot: element-wise sum
        torch.testing.assert_close(state["class_maps"], class_maps)
        queries = learner.backbone.features(q)
        pairs = torch.cat(
            [queries[:, None].expand(-1, 3, -1, -1, -1), class_maps[None].expand(5, -1, -1, -1, -1)], dim=2
        )  # C(f(x_q), f_c) channel-wise, every query against every class
        relation = learner.relation
        out = relation.block2(relation.block1(pairs.flatten(0, 1)))
        expected = relation.fc(out.flatten(1)).view(5, 3)
        logits = learner.score(state, q)
        torch.testing.assert_close(logits, expected)
        torch.testing.assert_close(learner.relation(pairs.flatten(0, 1)).view(5, 3), expected)
        r = torch.sigmoid(expected)
        torch.testing.assert_close(learner.probabilities(logits), r / r.sum(1, keepdim=True))


def test_mean_shot_pooling_averages_the_support_maps():
    learner = fs.create("relation", shot_pooling="mean").double()
    x, y, _ = random_task(torch.float64, seed=2)
    with torch.no_grad():
        maps = learner.backbone.features(x)
        expected = torch.stack([maps[y == c].mean(0) for c in range(3)])
        torch.testing.assert_close(learner.fit_task(x, y, 3)["class_maps"], expected)


def test_episode_loss_is_mse_of_sigmoid_relations_against_one_hot():
    torch.manual_seed(3)
    learner = fs.create("relation")
    episode = Episode(
        torch.randn(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]), torch.randn(3, 1, 28, 28), torch.tensor([1, 0, 1]), 2
    )
    loss, logits = learner.episode_loss(episode)
    torch.testing.assert_close(loss, F.mse_loss(torch.sigmoid(logits), F.one_hot(episode.query_y, 2).float()))
    loss.backward()
    assert all(p.grad is not None for p in learner.parameters())


def test_export_module_matches_score():
    learner = fs.create("relation")
    x, y, q = random_task(seed=4)
    state = learner.adapt_tensors(x, y, 3)
    with torch.no_grad():
        torch.testing.assert_close(learner.export_module(state)(q)[0], learner.score(state, q))


def test_a_few_hundred_episodes_on_real_glyphs_lift_accuracy_well_above_untrained(omniglot_splits):
    torch.manual_seed(0)
    learner = fs.create("relation")
    config = TrainConfig(episodes=200, n_way=5, k_shot=1, q_queries=5, val_every=200, val_episodes=20, seed=0)
    before, after = accuracy_before_and_after_training(learner, omniglot_splits, config, episodes=40)
    assert after.accuracy > 0.7, after
    assert after.accuracy > before.accuracy + 0.1, (before, after)


def test_bad_support_and_backbones_without_feature_maps_are_refused_cleanly():
    learner = fs.create("relation")
    assert_refuses_bad_support(learner)
    with pytest.raises(fs.InputError, match="feature maps"):
        fs.create("relation", backbone=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16)))
    with pytest.raises(fs.InputError, match="at least 4x4"):
        fs.create("relation", backbone={"pooled_blocks": 4})


def test_shipped_model_exports_to_onnx_with_the_same_probabilities(omniglot_splits, tmp_path):
    """Trained relation scores reach sigmoid values near 1e-7, where an approximate ONNX Sigmoid would not do."""
    import numpy as np
    import onnxruntime as ort

    from fewshot_sdk.data.episodes import EpisodeSampler

    learner = fs.load("relation-omniglot")
    episode = EpisodeSampler(omniglot_splits.test, 5, 2, 3, seed=0).sample()
    task = learner.adapt(fs.SupportSet.from_tensors(episode.support_x, episode.support_y))
    session = ort.InferenceSession(str(task.export_onnx(tmp_path / "relation.onnx")))
    outputs = [o.name for o in session.get_outputs()]
    for queries in (episode.query_x, 3 * torch.rand(2, 1, 28, 28) + 1):
        probs = session.run(None, {session.get_inputs()[0].name: queries.numpy()})[outputs.index("probs")]
        np.testing.assert_allclose(probs, task.predict(queries).probs.numpy(), atol=1e-5)
