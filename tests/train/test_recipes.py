import numpy as np
import torch
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.train.loop import TrainConfig
from fewshot_sdk.train.recipes import dataset_splits, train_on_dataset


def test_any_class_per_folder_dataset_trains_with_a_class_disjoint_split(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(10):
        folder = tmp_path / f"class{c}"
        folder.mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    torch.manual_seed(0)
    learner = fs.create("protonet", image_size=16)
    splits = dataset_splits(tmp_path, learner, split_seed=3)
    names = [set(s.class_names) for s in (splits.train, splits.val, splits.test)]
    assert [len(n) for n in names] == [6, 2, 2] and not (names[0] & names[1] or names[0] & names[2])
    config = TrainConfig(
        episodes=2, n_way=2, k_shot=1, q_queries=1, val_every=2, val_episodes=1, val_n_way=2, val_q_queries=1
    )
    train_on_dataset(learner, tmp_path, config, split_seed=3)
    training = learner.provenance.training
    assert training.dataset == f"folders:{tmp_path.name}" and training.split_seed == 3
    assert training.train_classes == 6 and training.episodes == 2
