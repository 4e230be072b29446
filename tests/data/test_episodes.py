import pytest
import torch

from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.errors import InputError


def tiny_dataset(classes=6, per_class=4):
    images = torch.arange(classes * per_class, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return LabelledImages(images.clone(), labels, tuple(f"c{i}" for i in range(classes)))


def test_episode_shapes_labels_and_disjoint_support_query():
    episode = EpisodeSampler(tiny_dataset(), n_way=3, k_shot=2, q_queries=2, seed=1).sample()
    assert episode.support_x.shape == (6, 1, 2, 2) and episode.query_x.shape == (6, 1, 2, 2)
    assert episode.support_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert episode.query_y.tolist() == [0, 0, 1, 1, 2, 2]
    ids_support = set(episode.support_x[:, 0, 0, 0].tolist())
    ids_query = set(episode.query_x[:, 0, 0, 0].tolist())
    assert not ids_support & ids_query
    # support and query of one episode-class come from one dataset class
    for c in range(3):
        classes = {int(v) // 4 for v in episode.support_x[episode.support_y == c, 0, 0, 0].tolist()}
        classes |= {int(v) // 4 for v in episode.query_x[episode.query_y == c, 0, 0, 0].tolist()}
        assert len(classes) == 1


def test_same_seed_same_episodes_whatever_the_global_rng():
    a = EpisodeSampler(tiny_dataset(), 3, 1, 2, seed=7).episodes(3)
    torch.manual_seed(123)
    torch.rand(10)
    b = EpisodeSampler(tiny_dataset(), 3, 1, 2, seed=7).episodes(3)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_x, y.query_x)


def test_impossible_episodes_are_refused_with_the_reason():
    with pytest.raises(InputError, match="needs 10 classes with >= 3 images each; the dataset has 6"):
        EpisodeSampler(tiny_dataset(), 10, 1, 2)
    with pytest.raises(InputError, match="n_way must be at least 2"):
        EpisodeSampler(tiny_dataset(), 1, 1, 1)
