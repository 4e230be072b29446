import pytest
import torch
import torch.nn.functional as F
from method_support import accuracy_before_and_after_training

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.train.loop import TrainConfig


def test_prototypes_and_logits_match_the_papers_equations_in_float64():
    torch.manual_seed(0)
    learner = fs.create("protonet").double()
    x = torch.randn(7, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    q = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    state = learner.fit_task(x, y, 3)
    with torch.no_grad():
        f_support, f_query = learner.backbone(x), learner.backbone(q)
        expected_protos = torch.stack([f_support[y == k].mean(0) for k in range(3)])
        expected_logits = -((f_query[:, None, :] - expected_protos[None]) ** 2).sum(-1)
        torch.testing.assert_close(state["prototypes"], expected_protos)
        torch.testing.assert_close(learner.score(state, q), expected_logits)


def test_square_root_features_on_the_sphere_match_a_float64_reference():
    """sqrt-l2: the power transform (Hu et al. 2021) of the non-negative backbone outputs, then L2."""
    torch.manual_seed(3)
    learner = fs.create("protonet", feature_norm="sqrt-l2").double()
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        raw = learner.backbone(x)
        assert bool((raw >= 0).all())  # after a ReLU and pooling
        expected = raw.sqrt() / raw.sqrt().norm(dim=1, keepdim=True)
        torch.testing.assert_close(learner.embed(x), expected)
    learner, x = learner.float(), x.float()
    state = learner.adapt_tensors(x, torch.tensor([0, 1, 0, 1, 1]), 2)
    with torch.no_grad():
        exported = learner.export_module(state)(x)[0].softmax(-1)
    torch.testing.assert_close(exported, learner.score(state, x).softmax(-1), rtol=1e-4, atol=1e-5)


def test_exported_linear_head_gives_the_same_probabilities():
    torch.manual_seed(1)
    learner = fs.create("protonet")
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    state = learner.adapt_tensors(x, y, 3)
    q = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        head = learner.export_module(state)
        logits, novelty = head(q)
        torch.testing.assert_close(logits.softmax(-1), learner.score(state, q).softmax(-1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(novelty, learner.score_with_novelty(state, q)[1], rtol=1e-4, atol=1e-4)


def test_episode_loss_is_cross_entropy_of_query_logits():
    torch.manual_seed(2)
    learner = fs.create("protonet")
    from fewshot_sdk.data.episodes import Episode

    episode = Episode(
        torch.randn(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]), torch.randn(2, 1, 28, 28), torch.tensor([1, 0]), 2
    )
    loss, logits = learner.episode_loss(episode)
    torch.testing.assert_close(loss, F.cross_entropy(logits, episode.query_y))
    loss.backward()
    assert all(p.grad is not None for p in learner.parameters())


@pytest.mark.parametrize("seed", [0])
def test_a_few_hundred_episodes_on_real_glyphs_lift_accuracy_well_above_untrained(omniglot_splits, seed):
    torch.manual_seed(seed)
    learner = fs.create("protonet")
    config = TrainConfig(episodes=100, n_way=10, k_shot=1, q_queries=5, val_every=100, val_episodes=20, seed=seed)
    before, after = accuracy_before_and_after_training(learner, omniglot_splits, config, episodes=40)
    assert after.accuracy > 0.8, after
    assert after.accuracy > before.accuracy + 0.1, (before, after)


def test_sampler_episodes_feed_adapt_and_predict(omniglot_splits):
    learner = fs.create("protonet")
    episode = EpisodeSampler(omniglot_splits.test, 5, 2, 3, seed=0).sample()
    support = fs.SupportSet.from_tensors(episode.support_x, episode.support_y)
    prediction = learner.adapt(support).predict(episode.query_x)
    assert prediction.indices.shape == (15,) and prediction.probs.shape == (15, 5)
