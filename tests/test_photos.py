"""The photo path end to end: the bundled photo model on the bundled example photos, and training on photos."""

import json

import numpy as np
import pytest
import torch
from cli_support import assert_clean_error, run
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.train.loop import TrainConfig
from fewshot_sdk.train.recipes import train_on_dataset, warm_start

PHOTO_CLASSES = ("flamingo", "laptop", "panda", "pizza", "starfish")


@pytest.fixture(scope="module")
def photo_model():
    return fs.load("protonet-photos")


def test_the_default_model_classifies_the_example_photos(examples_dir):
    support = examples_dir / "photos" / "support"
    result = run("classify", "--support", support, "--query", examples_dir / "photos" / "queries", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == len(PHOTO_CLASSES)
    for row in rows:
        assert row["query"].split("/")[-1].startswith(row["class"]), row
        assert row["probability"] > 0.5, row


def test_the_photo_model_records_its_domain_preprocessing_and_class_split(photo_model):
    assert photo_model.domain == "photos"
    config = photo_model.preprocess_config
    assert config.channels == 3 and config.resize_shorter is not None
    training = photo_model.provenance.training
    assert training.dataset == "folders:caltech101" and training.split_seed is not None
    held_out = training.extra["held_out_classes"]
    assert set(PHOTO_CLASSES) <= set(held_out["test"])  # the examples are classes it never trained on
    tested = {(r.n_way, r.k_shot) for r in photo_model.provenance.results if r.split == "test"}
    assert {(5, 1), (5, 5), (20, 1), (20, 5)} <= tested


def test_photo_tasks_export_to_onnx_with_the_same_probabilities(photo_model, examples_dir, tmp_path):
    from fewshot_sdk.export.runtime import OnnxClassifier

    task = photo_model.adapt(fs.SupportSet.from_folder(examples_dir / "photos" / "support"))
    path = task.export_onnx(tmp_path / "photos.onnx")  # the exporter checks parity itself before writing
    queries = sorted((examples_dir / "photos" / "queries").glob("*.jpg"))
    onnx_probs = OnnxClassifier(path).predict_proba(queries)
    np.testing.assert_allclose(onnx_probs, task.predict(queries).probs.numpy(), atol=1e-4)


def _photo_folders(root, classes=10, per_class=4, size=(40, 30)):
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 30, size=(*size[::-1], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


TINY = TrainConfig(
    episodes=1, n_way=2, k_shot=1, q_queries=1, val_every=1, val_episodes=1, val_n_way=2, val_q_queries=1
)


def test_training_from_the_photo_model_keeps_rgb_and_its_statistics(photo_model, tmp_path):
    data = _photo_folders(tmp_path / "data")
    learner = warm_start("protonet-photos")
    train_on_dataset(learner, data, TINY.model_copy(update={"frozen_stages": 17, "batchnorm": "frozen"}))
    learner.save(tmp_path / "mine")
    saved = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert saved["preprocess"] == photo_model.preprocess_config.model_dump(mode="json")
    assert saved["domain"] == "photos"


def test_training_from_scratch_on_colour_folders_measures_their_channels_and_statistics(tmp_path):
    data = _photo_folders(tmp_path / "data", classes=25, per_class=16)  # 5 validation classes of 16: a 5-way episode
    out = tmp_path / "scratch"
    result = run(
        "train", "--data", data, "--out", out, "--episodes", 1, "--n-way", 2, "--k-shot", 1, "--q-queries", 1,
        "--val-every", 1, "--val-episodes", 1, "--image-size", 16,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    preprocess = json.loads((out / "config.json").read_text())["preprocess"]
    assert preprocess["channels"] == 3 and len(preprocess["mean"]) == 3 and len(preprocess["std"]) == 3
    assert preprocess["mean"] != [0.92] and all(0 < s < 0.5 for s in preprocess["std"])


def test_greyscale_folders_stay_one_channel(tmp_path):
    from fewshot_sdk.train.recipes import folder_preprocess_settings

    rng = np.random.default_rng(1)
    for c in range(6):
        (tmp_path / f"c{c}").mkdir()
        for i in range(2):
            grey = rng.integers(0, 255, (20, 20), dtype=np.uint8)
            Image.fromarray(np.stack([grey] * 3, axis=2)).save(tmp_path / f"c{c}" / f"{i}.png")  # grey stored as RGB
    assert folder_preprocess_settings(tmp_path)["channels"] == 1


def test_init_mismatches_exit_with_one_line(tmp_path):
    data = _photo_folders(tmp_path / "data")
    assert_clean_error(
        run("train", "--init", "protonet-photos", "--method", "maml", "--data", data, "--out", tmp_path / "o"),
        "does not match",
    )
    assert_clean_error(
        run("train", "--init", "protonet-photos", "--backbone", "conv4", "--data", data, "--out", tmp_path / "o"),
        "--backbone cannot be combined",
    )


def test_photos_given_to_the_glyph_model_warn_once(examples_dir):
    queries = sorted((examples_dir / "photos" / "queries").glob("*.jpg"))
    learner = fs.load("protonet-omniglot")
    task = learner.adapt(fs.SupportSet.from_folder(examples_dir / "support"))
    with pytest.warns(fs.DomainWarning, match="protonet-photos"):
        task.predict(queries)
    torch.manual_seed(0)
