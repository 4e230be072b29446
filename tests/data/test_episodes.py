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


def grouped_dataset():
    """Nine classes in three groups of sizes 2, 3 and 4 (names group/class), image value = class index."""
    names = ("a/0", "a/1", "b/0", "b/1", "b/2", "c/0", "c/1", "c/2", "c/3")
    images = torch.arange(len(names), dtype=torch.float32).repeat_interleave(3).reshape(-1, 1, 1, 1)
    return LabelledImages(images, torch.arange(len(names)).repeat_interleave(3), names)


def test_within_group_episodes_draw_every_class_from_one_group_and_skip_groups_too_small():
    dataset = grouped_dataset()
    seen = set()
    for episode in EpisodeSampler(dataset, 3, 1, 1, seed=2, within_group=True).episodes(30):
        groups = {dataset.class_names[int(v)].split("/")[0] for v in episode.support_x.flatten().tolist()}
        assert len(groups) == 1
        seen |= groups
    assert seen == {"b", "c"}  # "a" has only 2 classes
    with pytest.raises(InputError, match="the largest group has 4"):
        EpisodeSampler(dataset, 5, 1, 1, within_group=True)


def test_without_groups_the_episodes_are_unchanged_by_the_group_option():
    dataset = grouped_dataset()
    plain = EpisodeSampler(dataset, 3, 1, 1, seed=5).episodes(4)
    one_group_names = tuple(f"g/{i}" for i in range(9))
    relabelled = LabelledImages(dataset.images, dataset.labels, one_group_names)
    one_group = EpisodeSampler(relabelled, 3, 1, 1, seed=5, within_group=True).episodes(4)
    for a, b in zip(plain, one_group, strict=True):
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
