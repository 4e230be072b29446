import pytest
import torch
import torch.nn.functional as F
from method_support import accuracy_before_and_after_training, assert_refuses_bad_support

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.methods._metric_pairs import affine_distort, random_affine_matrices, verification_pairs
from fewshot_sdk.train.loop import TrainConfig


@pytest.mark.parametrize(("embedding", "features"), [(0, 64), (32, 32)])
def test_shapes_of_state_logits_and_prediction(embedding, features):
    torch.manual_seed(0)
    learner = fs.create("siamese", embedding=embedding)
    x, y = torch.randn(7, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2, 2])
    state = learner.adapt_tensors(x, y, 3)
    assert state["support"].shape == (7, features) and state["support_classes"].shape == (7, 3)
    task = learner.adapt(fs.SupportSet.from_tensors(x, y))
    prediction = task.predict(torch.randn(5, 1, 28, 28))
    assert prediction.probs.shape == (5, 3) and prediction.indices.shape == (5,)
    torch.testing.assert_close(prediction.probs.sum(1), torch.ones(5))


@pytest.mark.parametrize("embedding", [0, 16])
def test_score_is_per_class_best_weighted_l1_sigmoid_pair_in_float64(embedding):
    torch.manual_seed(1)
    learner = fs.create("siamese", embedding=embedding).double()
    with torch.no_grad():
        learner.distance_weights.copy_(torch.randn(embedding or 64, dtype=torch.float64))  # signs of both kinds
        learner.bias.fill_(0.3)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 2, 2, 2])
    q = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    state = learner.fit_task(x, y, 3)
    with torch.no_grad():
        # Koch eq. 1: p = sigmoid(sum_j alpha_j |h_j(x1) - h_j(x2)| + b), alpha = -w.
        def h(images):  # the conv features, then (embedding > 0) Koch's sigmoid FC layer
            features = learner.backbone(images)
            return torch.sigmoid(learner.head[0](features)) if embedding else features

        h_support, h_query = h(x), h(q)
        alpha = -learner.distance_weights
        pair = ((h_query[:, None, :] - h_support[None]).abs() * alpha).sum(-1) + learner.bias
        expected = torch.stack([pair[:, y == c].max(1).values for c in range(3)], 1)
        logits = learner.score(state, q)
        torch.testing.assert_close(logits, expected)
        p = torch.sigmoid(expected)
        torch.testing.assert_close(learner.probabilities(logits), p / p.sum(1, keepdim=True))


def test_probabilities_stay_finite_when_every_sigmoid_underflows():
    probs = fs.create("siamese").probabilities(torch.tensor([[-800.0, -805.0, -900.0]]))
    assert torch.isfinite(probs).all() and float(probs.sum()) == pytest.approx(1.0)
    assert probs.argmax() == 0


def test_export_module_matches_score():
    torch.manual_seed(2)
    learner = fs.create("siamese", embedding=8)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
    state = learner.adapt_tensors(x, y, 2)
    q = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(learner.export_module(state)(q)[0], learner.score(state, q))


def test_verification_loss_is_balanced_bce_over_distinct_pairs():
    torch.manual_seed(3)
    learner = fs.create("siamese", embedding=8, augment=False)
    episode = Episode(
        torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2]), torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2]), 3
    )
    loss, logits = learner.episode_loss(episode)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        e = learner.embed(torch.cat([episode.support_x, episode.query_x]))
        pairs = learner.pair_logits(e, e)
    same, different = verification_pairs(labels)
    assert int(same.sum()) == 6 and int(different.sum()) == 24 and not same.diagonal().any()
    expected = 0.5 * F.binary_cross_entropy_with_logits(pairs[same], torch.ones(6)) + 0.5 * (
        F.binary_cross_entropy_with_logits(pairs[different], torch.zeros(24))
    )
    torch.testing.assert_close(loss, expected)
    assert logits.shape == (3, 3)
    loss.backward()
    assert learner.distance_weights.grad is not None and learner.bias.grad is not None


def test_affine_distortion_keeps_shapes_and_stays_within_kochs_ranges():
    torch.manual_seed(4)
    images = torch.randn(64, 1, 28, 28)
    assert affine_distort(images).shape == images.shape
    matrices = random_affine_matrices(2000, images)
    # determinant of rotation @ shear @ scale lies within the extremes of the sampled ranges
    det = torch.linalg.det(matrices[:, :, :2])
    assert float(det.min()) > (1 - 0.3**2) * 0.8**2 - 1e-6 and float(det.max()) < 1.2**2 + 1e-6
    assert float(matrices[:, :, 2].abs().max()) <= 2 * 2 / 105 + 1e-6
    # each component is switched off half of the time, leaving e.g. the x translation at exactly zero
    assert 0.45 < float((matrices[:, 0, 2] == 0).float().mean()) < 0.55


def test_a_few_hundred_verification_steps_on_real_glyphs_lift_one_shot_accuracy(omniglot_splits):
    torch.manual_seed(0)
    learner = fs.create("siamese")
    config = TrainConfig(episodes=200, n_way=10, k_shot=1, q_queries=3, val_every=200, val_episodes=20, seed=0)
    before, after = accuracy_before_and_after_training(learner, omniglot_splits, config, episodes=40)
    assert after.accuracy > 0.7, after
    assert after.accuracy > before.accuracy + 0.1, (before, after)


def test_bad_support_is_refused_cleanly():
    learner = fs.create("siamese", embedding=8)
    assert_refuses_bad_support(learner)
    with pytest.raises(fs.InputError, match="at least 2 classes"):
        learner.adapt_tensors(torch.randn(2, 1, 28, 28), torch.tensor([0, 0]), 1)
    with pytest.raises(fs.InputError, match="shape"):
        learner.adapt(fs.SupportSet.from_tensors(torch.randn(2, 1, 32, 32), torch.tensor([0, 1])))
