import torch

from fewshot_sdk.data.omniglot import load_lake_runs


def test_background_zips_are_combined_without_duplicating_greek_and_latin(omniglot_characters):
    assert omniglot_characters.num_classes == 242  # 136 + 156 - 24 Greek - 26 Latin
    assert len(omniglot_characters) == 242 * 20
    assert omniglot_characters.images.shape[1:] == (1, 28, 28)
    alphabets = {name.split("/")[0] for name in omniglot_characters.class_names}
    assert len(alphabets) == 8


def test_character_split_is_disjoint_seeded_and_rotates_only_training(omniglot_splits, omniglot_characters):
    train = {n for n in omniglot_splits.train.class_names if "@rot" not in n}
    val, test = set(omniglot_splits.val.class_names), set(omniglot_splits.test.class_names)
    assert not (train & val or train & test or val & test)
    assert len(train) + len(val) + len(test) == 242
    assert omniglot_splits.train.num_classes == 4 * len(train)
    assert not any("@rot" in n for n in val | test)
    name = sorted(train)[0]
    original = omniglot_splits.train.class_names.index(name)
    rotated = omniglot_splits.train.class_names.index(f"{name}@rot90")
    first = omniglot_splits.train.images[omniglot_splits.train.labels == original][0]
    turned = omniglot_splits.train.images[omniglot_splits.train.labels == rotated][0]
    torch.testing.assert_close(torch.rot90(first, 1, dims=(1, 2)), turned)


def test_lake_runs_have_twenty_runs_of_twenty_with_answers(omniglot_dir):
    runs = load_lake_runs(omniglot_dir / "all_runs.zip")
    assert len(runs) == 20
    for run in runs:
        assert len(run.training) == 20 and len(run.test) == 20
        assert sorted(run.answers) == list(range(20))  # each class is the answer once
    assert runs[0].answers[0] == 7  # run01/test/item01.png -> run01/training/class08.png
