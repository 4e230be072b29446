import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sdk import imageio as images_module
from fewshot_sdk.config import PreprocessConfig
from fewshot_sdk.data.images import Preprocessor, load_image
from fewshot_sdk.errors import InputError


def test_preprocess_matches_a_direct_float64_computation(tmp_path):
    pixels = np.arange(35 * 21, dtype=np.uint8).reshape(21, 35)
    path = tmp_path / "ramp.png"
    Image.fromarray(pixels).save(path)
    config = PreprocessConfig(image_size=(21, 35), mean=(0.5,), std=(0.25,))
    out = Preprocessor(config)([path])
    expected = (torch.from_numpy(pixels).double() / 255 - 0.5) / 0.25
    assert out.shape == (1, 1, 21, 35)
    torch.testing.assert_close(out[0, 0].double(), expected, rtol=0, atol=1e-6)


def test_rgb_and_rgba_images_become_the_models_channels_and_size():
    rgba = Image.new("RGBA", (50, 40), (255, 0, 0, 0))  # fully transparent: shown as white
    grey = Preprocessor(PreprocessConfig(image_size=28, channels=1, mean=(0.0,), std=(1.0,)))
    out = grey([rgba])
    assert out.shape == (1, 1, 28, 28)
    assert torch.allclose(out, torch.ones_like(out))
    rgb = Preprocessor(PreprocessConfig(image_size=16, channels=3, mean=(0.0,), std=(1.0,)))
    assert rgb([np.zeros((10, 12), dtype=np.uint8)]).shape == (1, 3, 16, 16)


def test_missing_directory_and_non_image_files_are_named(tmp_path):
    with pytest.raises(InputError, match="not found: .*nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.png is not an image"):
        load_image(text)
    with pytest.raises(InputError, match="cannot read an image from a int"):
        load_image(3)  # type: ignore[arg-type]


def test_decompression_bombs_are_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 200 * 200)
    with pytest.raises(InputError, match="big.png is 300x300 pixels, above"):
        load_image(path)


def test_numpy_images_with_nan_are_refused():
    with pytest.raises(InputError, match="NaN"):
        load_image(np.full((4, 4), np.nan, dtype=np.float32))


def test_check_batch_names_shape_channel_and_nan_problems():
    pre = Preprocessor(PreprocessConfig(image_size=28, channels=1))
    assert pre.check_batch(torch.zeros(1, 28, 28)).shape == (1, 1, 28, 28)
    with pytest.raises(InputError, match=r"shape \(2, 3, 28, 28\) but the model takes \[B, 1, 28, 28\]"):
        pre.check_batch(torch.zeros(2, 3, 28, 28))
    with pytest.raises(InputError, match="NaN"):
        pre.check_batch(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(InputError, match="floating-point"):
        pre.check_batch(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))


def test_preprocess_config_validates_statistics():
    with pytest.raises(ValueError, match="std"):
        PreprocessConfig(std=(0.0,))
    with pytest.raises(ValueError, match="mean needs 1 or 3 entries"):
        PreprocessConfig(channels=3, mean=(0.1, 0.2))
