"""Out-of-domain warnings: photos given to a handwriting model are named once, with the model to use."""

import json
import warnings

import numpy as np
import pytest
import torch
from cli_support import assert_clean_error, run
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.cli.app import DEFAULT_MODEL
from fewshot_sdk.config import PreprocessConfig
from fewshot_sdk.imageio import load_image, photo_description
from fewshot_sdk.registry import zoo_path
from fewshot_sdk.task.domain import PHOTO_MODEL, DomainWarning


def colour_photo(seed: int, width: int = 451, height: int = 300) -> Image.Image:
    """A synthetic photo with real colour: hue gradients, a different tint per seed."""
    tint = np.random.default_rng(seed).integers(0, 256, size=3)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width + tint[0], y * 255 // height + tint[1], (x + y) % 256 + tint[2]], axis=2)
    return Image.fromarray((pixels % 256).astype(np.uint8), "RGB")


def domain_warnings(caught):
    return [w for w in caught if issubclass(w.category, DomainWarning)]


@pytest.fixture(scope="module")
def omniglot_learner():
    return fs.load("protonet-omniglot")


def test_colour_photos_given_to_an_omniglot_model_warn_once():
    learner = fs.load("protonet-omniglot")  # its own learner: the warning is once per learner
    support = fs.SupportSet.from_mapping({"a": [colour_photo(1), colour_photo(2)], "b": [colour_photo(3)]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = learner.adapt(support)
        task.predict([colour_photo(4), colour_photo(5)])
        task.predict(colour_photo(6))
        learner.adapt(support).predict(np.asarray(colour_photo(7)))
    (warning,) = domain_warnings(caught)
    message = str(warning.message)
    assert message.startswith("protonet-omniglot is a handwritten-characters model (1x28x28 greyscale)"), message
    assert "these look like photos (RGB 451x300)" in message
    assert f"fs.load('{PHOTO_MODEL}')" in message and f"--model {PHOTO_MODEL}" in message
    assert PHOTO_MODEL == "protonet-photos"
    assert warning.filename == __file__  # names the caller's line, not the SDK's
    assert issubclass(DomainWarning, UserWarning)

    with warnings.catch_warnings(record=True) as caught:  # another learner says it again, once
        warnings.simplefilter("always")
        other = fs.load("maml-omniglot")
        other.adapt(fs.SupportSet.from_mapping({"a": [colour_photo(8)], "b": [colour_photo(8)] * 2}))
        other.adapt(fs.SupportSet.from_mapping({"a": [colour_photo(9)], "b": [colour_photo(9)]}))
    assert len(domain_warnings(caught)) == 1


def test_greyscale_glyphs_do_not_warn(omniglot_learner, examples_dir):
    glyph_paths = sorted((examples_dir / "support").glob("*/*.png"))  # 105x105 Omniglot scans
    grey = Image.open(glyph_paths[0]).convert("L")
    support = fs.SupportSet.from_folder(examples_dir / "support")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        task = omniglot_learner.adapt(support)
        task.predict(sorted((examples_dir / "queries").glob("*.png")))
        task.predict([grey, grey.convert("RGB"), grey.resize((28, 28)), np.asarray(grey), np.asarray(grey) / 255.0])
        task.predict(np.asarray(grey.convert("RGB")))  # grey stored as RGB is still grey
        omniglot_learner.preprocess(glyph_paths)
        omniglot_learner.domain_watch.warn()
    assert omniglot_learner.domain_watch.found is None


def test_a_photo_model_given_photos_does_not_warn():
    learner = fs.create("protonet", backbone="efficientnet-lite0")  # ImageNet weights: domain "photos"
    assert learner.domain == "photos"
    small = [colour_photo(i, 96, 64) for i in range(3)]  # 224x224 forward passes: keep it to a few images
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        task = learner.adapt(fs.SupportSet.from_mapping({"a": small[:1], "b": small[1:2]}))
        task.predict(small[2])
    assert learner.domain_watch.found is None  # a photo model's watch does not even look


def test_tensors_are_model_ready_and_not_checked(omniglot_learner):
    x = torch.randn(4, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        task = omniglot_learner.adapt(fs.SupportSet.from_tensors(x, [0, 0, 1, 1]))
        task.predict(torch.randn(2, 1, 28, 28))
        task.predict([torch.randn(1, 28, 28)])
    assert omniglot_learner.domain_watch.found is None


def test_what_looks_like_a_photo(tmp_path):
    glyph = PreprocessConfig().image_size  # 28x28

    def described(item: object) -> str | None:
        return photo_description(load_image(item), glyph)  # as the preprocessor decodes it

    grey_photo = colour_photo(0).convert("L")
    assert described(colour_photo(0)) == "RGB 451x300"
    assert described(grey_photo) == "greyscale 451x300"  # far larger than 28x28
    assert described(colour_photo(0, 40, 40)) == "RGB 40x40"  # small, but in colour
    assert described(np.asarray(colour_photo(0, 40, 40)) / 255.0) == "RGB 40x40"
    assert described(grey_photo.resize((105, 105))) is None  # Omniglot's own scan size
    assert described(grey_photo.resize((105, 105)).convert("RGB")) is None
    colour_photo(0).save(tmp_path / "photo.jpg")
    grey_photo.resize((100, 100)).convert("RGB").save(tmp_path / "grey.jpg")
    assert described(tmp_path / "photo.jpg") == "RGB 451x300"
    assert described(str(tmp_path / "grey.jpg")) is None


def test_an_unreadable_image_is_the_preprocessors_error_and_no_warning(omniglot_learner, tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        with pytest.raises(fs.InputError, match="bad.png"):
            omniglot_learner.preprocess([tmp_path / "bad.png"])


def write_photos(folder, seeds):
    folder.mkdir(parents=True)
    for seed in seeds:
        colour_photo(seed, 160, 120).save(folder / f"{seed}.png")
    return folder


def test_the_cli_prints_one_warning_line(tmp_path):
    cats = write_photos(tmp_path / "cats", (1, 2))
    dogs = write_photos(tmp_path / "dogs", (3, 4))
    queries = write_photos(tmp_path / "queries", (5, 6, 7))
    result = run("classify", "--model", "protonet-omniglot", "--support", cats, "--support", dogs, "--query", queries)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        "warning: protonet-omniglot is a handwritten-characters model (1x28x28 greyscale); these look like photos "
        "(RGB 160x120): use fs.load('protonet-photos') / --model protonet-photos"
    )
    assert len(result.stdout.splitlines()) == 3  # the predictions still come


def test_the_default_model_is_the_photo_model(examples_dir):
    assert DEFAULT_MODEL == "protonet-photos"
    if zoo_path(DEFAULT_MODEL) is None:  # not bundled yet: one clean line, not a traceback
        support = [x for c in sorted((examples_dir / "support").iterdir()) for x in ("--support", c)]
        assert_clean_error(run("classify", *support, "--query", examples_dir / "queries"), "'protonet-photos'")


def test_models_lists_each_bundled_models_domain_and_input_size():
    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    models = {entry["name"]: entry for entry in json.loads(result.stdout)["models"]}
    assert set(models) == set(fs.available()["models"])
    for name, entry in models.items():
        assert entry["domain"] != "unspecified" and entry["input_size"], entry
        if name.endswith("-omniglot"):
            assert (entry["domain"], entry["input_size"]) == ("handwritten-characters", "1x28x28"), entry
    assert (models["maml-sinusoid"]["domain"], models["maml-sinusoid"]["input_size"]) == ("sinusoid-regression", "1")
    if "protonet-photos" in models:
        assert (models["protonet-photos"]["domain"], models["protonet-photos"]["input_size"]) == ("photos", "3x224x224")
    table = run("models")
    assert table.exit_code == 0, table.output
    assert "handwritten-characters" in table.stdout or "handwritten" in table.stdout
    assert "1x28x28" in table.stdout
