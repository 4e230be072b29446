import pytest
import torch

from fewshot_sdk.config import PreprocessConfig
from fewshot_sdk.data.images import Preprocessor
from fewshot_sdk.data.omniglot import (
    background_sources,
    load_background_characters,
    load_evaluation_characters,
    load_lake_runs,
    minimal_split_alphabets,
    split_alphabets,
)
from fewshot_sdk.errors import InputError


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


@pytest.fixture(scope="module")
def full_background(omniglot_dir):
    """The full 30-alphabet background set at 28x28 (~2 s to decode)."""
    return load_background_characters(omniglot_dir, Preprocessor(PreprocessConfig()))


def test_a_folder_with_the_full_background_set_reads_it_instead_of_the_minimal_splits(omniglot_dir, full_background):
    assert background_sources(omniglot_dir) == [omniglot_dir / "images_background.zip"]
    alphabets = {name.split("/")[0] for name in full_background.class_names}
    assert (full_background.num_classes, len(full_background), len(alphabets)) == (964, 19280, 30)


def test_validation_is_whole_alphabets_outside_the_minimal_splits_on_a_seed(omniglot_dir, full_background):
    minimal = minimal_split_alphabets(omniglot_dir)
    assert len(minimal) == 8 and "Latin" in minimal
    train, val, held_out = split_alphabets(full_background, split_seed=0, n_val=5, keep_in_train=minimal)
    assert len(held_out) == 5 and not set(held_out) & minimal
    assert {name.split("/")[0] for name in val.class_names} == set(held_out)
    originals = {n for n in train.class_names if "@rot" not in n}
    assert not {n.split("/")[0] for n in originals} & set(held_out)
    assert len(originals) + val.num_classes == 964 and train.num_classes == 4 * len(originals)
    assert split_alphabets(full_background, 0, 5, minimal)[2] == held_out
    assert split_alphabets(full_background, 1, 5, minimal)[2] != held_out


def test_the_evaluation_set_is_the_twenty_test_alphabets_disjoint_from_the_background(omniglot_dir, full_background):
    evaluation = load_evaluation_characters(omniglot_dir, Preprocessor(PreprocessConfig()))
    alphabets = {name.split("/")[0] for name in evaluation.class_names}
    assert (evaluation.num_classes, len(evaluation), len(alphabets)) == (659, 13180, 20)
    assert not alphabets & {name.split("/")[0] for name in full_background.class_names}


def test_a_folder_without_the_evaluation_set_says_so(minimal_omniglot_dir):
    with pytest.raises(InputError, match="images_evaluation.zip"):
        load_evaluation_characters(minimal_omniglot_dir, Preprocessor(PreprocessConfig()))
