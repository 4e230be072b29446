"""Photos as a vision user hands them over: EXIF orientation, odd pixel modes, aspect-keeping resize + centre crop.

Every check goes through :func:`fewshot_sdk.imageio.to_model_pixels` (the one definition)
and, where it matters, through both of its callers: the torch ``Preprocessor`` and the
torch-free numpy runtime, which must agree to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sdk.config import PreprocessConfig
from fewshot_sdk.data.images import Preprocessor, load_image
from fewshot_sdk.errors import InputError
from fewshot_sdk.export import runtime
from fewshot_sdk.export.metadata import OnnxMetadata
from fewshot_sdk.imageio import centre_box, scaled_size, to_model_pixels
from fewshot_sdk.models.backbones import PHOTO_PREPROCESS

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
ORIENTATION = 0x0112


def raw(config: PreprocessConfig) -> Preprocessor:
    """The same geometry and channels with mean 0, std 1, so outputs are the [0, 1] pixels themselves."""
    return Preprocessor(config.model_copy(update={"mean": (0.0,), "std": (1.0,)}))


def metadata_for(config: PreprocessConfig) -> OnnxMetadata:
    return OnnxMetadata.describing("protonet", ("a", "b"), config, "test")


def sideways_photo(path, orientation: int = 6):
    """A JPEG stored 80 wide x 40 tall, top half red and bottom half blue, tagged to be shown rotated."""
    stored = Image.new("RGB", (80, 40), RED)
    stored.paste(BLUE, (0, 20, 80, 40))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    stored.save(path, "JPEG", quality=95, exif=exif)
    return path


# ----------------------------------------------------------------- orientation
def test_a_phone_photo_stored_sideways_comes_out_upright(tmp_path):
    # Orientation 6: viewers rotate the stored pixels 90 degrees clockwise, so the stored top
    # (red) is shown on the right and the stored bottom (blue) on the left, 40 wide x 80 tall.
    path = sideways_photo(tmp_path / "phone.jpg")
    pixels = to_model_pixels(load_image(path), 3, (80, 40), None)
    assert pixels.shape == (80, 40, 3)
    left, right = pixels[:, :16].mean(axis=(0, 1)), pixels[:, -16:].mean(axis=(0, 1))
    assert left[2] > 0.9 and left[0] < 0.1  # blue
    assert right[0] > 0.9 and right[2] < 0.1  # red
    batch = raw(PreprocessConfig(image_size=(80, 40), channels=3))([path])
    assert batch.shape == (1, 3, 80, 40)
    torch.testing.assert_close(batch[0].permute(1, 2, 0), torch.from_numpy(pixels), rtol=0, atol=0)


def test_orientation_tags_without_rotation_and_mirrors_are_applied(tmp_path):
    upright = to_model_pixels(load_image(sideways_photo(tmp_path / "one.jpg", 1)), 3, (40, 80), None)
    assert upright[:16, :, 0].mean() > 0.9 and upright[-16:, :, 2].mean() > 0.9  # red on top, as stored
    flipped = to_model_pixels(load_image(sideways_photo(tmp_path / "three.jpg", 3)), 3, (40, 80), None)
    assert flipped[:16, :, 2].mean() > 0.9 and flipped[-16:, :, 0].mean() > 0.9  # rotated 180: blue on top


# ----------------------------------------------------------------- pixel modes
def test_a_16_bit_png_is_scaled_by_its_real_range_not_saturated(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.full((10, 12), 32768, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    grey = raw(PreprocessConfig(image_size=(10, 12), channels=1))([path])
    torch.testing.assert_close(grey, torch.full_like(grey, 32768 / 65535), rtol=0, atol=1e-6)
    rgb = raw(PreprocessConfig(image_size=(7, 9), channels=3))([path])
    assert rgb.shape == (1, 3, 7, 9)
    torch.testing.assert_close(rgb, torch.full_like(rgb, 32768 / 65535), rtol=0, atol=1e-6)


def test_16_bit_ramps_keep_their_levels_in_every_16_bit_mode():
    ramp = np.linspace(0, 65535, 16 * 9).round().astype(np.uint16).reshape(9, 16)
    expected = ramp.astype(np.float64) / 65535
    big_endian = Image.frombytes("I;16B", (16, 9), ramp.astype(">u2").tobytes())
    for image in (Image.fromarray(ramp), big_endian, Image.fromarray(ramp.astype(np.int32))):
        pixels = to_model_pixels(image, 1, (9, 16), None)
        assert pixels.dtype == np.float32
        np.testing.assert_allclose(pixels, expected, rtol=0, atol=1e-6)
    from_array = to_model_pixels(load_image(ramp), 1, (9, 16), None)  # a uint16 numpy array, quantised to 8 bits
    np.testing.assert_allclose(from_array, expected, rtol=0, atol=1 / 510 + 1e-6)


def test_float_images_are_0_to_1_when_their_max_is_at_most_1_else_0_to_255():
    unit = Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32))
    assert np.allclose(to_model_pixels(unit, 1, (4, 4), None), 0.25)
    bytes_like = Image.fromarray(np.full((4, 4), 51.0, dtype=np.float32))
    assert np.allclose(to_model_pixels(bytes_like, 3, (4, 4), None), 0.2)
    with pytest.raises(InputError, match="NaN"):
        to_model_pixels(Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)), 1, (4, 4), None)


def test_a_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (20, 14), (0, 255, 255, 0)).save(path, quality=95)  # no cyan, full magenta + yellow: red
    assert Image.open(path).mode == "CMYK"
    rgb = to_model_pixels(load_image(path), 3, (14, 20), None)
    assert rgb.shape == (14, 20, 3)
    np.testing.assert_allclose(rgb.mean(axis=(0, 1)), [1.0, 0.0, 0.0], atol=0.03)
    grey = to_model_pixels(load_image(path), 1, (14, 20), None)
    np.testing.assert_allclose(grey, 0.299, atol=0.02)  # PIL's luma weight of red


def test_ycbcr_and_palette_images_become_rgb():
    photo = Image.new("RGB", (6, 5), (10, 200, 90))
    for image in (photo.convert("YCbCr"), photo.convert("P", palette=Image.Palette.ADAPTIVE)):
        np.testing.assert_allclose(to_model_pixels(image, 3, (5, 6), None), np.float32(photo) / 255, atol=0.02)


def test_transparent_palette_and_keyed_grey_pngs_are_composited_on_white(tmp_path):
    indices = np.zeros((8, 8), dtype=np.uint8)
    indices[2:6, 2:6] = 1
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # index 0 black but transparent, index 1 black
    path = tmp_path / "sticker.png"
    palette.save(path, transparency=0)
    for channels in (1, 3):
        pixels = to_model_pixels(load_image(path), channels, (8, 8), None)
        ink = pixels[2:6, 2:6]
        assert np.all(ink == 0.0)
        background = pixels.copy()
        background[2:6, 2:6] = 1.0
        assert np.all(background == 1.0)  # white, not the black the palette entry holds
    keyed = tmp_path / "keyed.png"
    Image.fromarray(indices * 100).save(keyed, transparency=0)  # grey PNG with a tRNS colour
    assert to_model_pixels(load_image(keyed), 1, (8, 8), None)[0, 0] == 1.0


def test_grey_images_become_three_equal_channels_and_1_bit_images_work():
    ramp = np.arange(63, dtype=np.uint8).reshape(7, 9) * 4
    rgb = to_model_pixels(Image.fromarray(ramp), 3, (7, 9), None)
    assert rgb.shape == (7, 9, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    np.testing.assert_allclose(rgb[..., 0], ramp / 255, atol=1e-7)
    bits = Image.fromarray(ramp > 100).convert("1")
    assert bits.mode == "1"
    for channels in (1, 3):
        pixels = to_model_pixels(bits, channels, (7, 9), None)
        assert set(np.unique(pixels)) == {0.0, 1.0}
        assert np.array_equal(pixels if channels == 1 else pixels[..., 0], (ramp > 100).astype(np.float32))


# ----------------------------------------------------------------- geometry
def test_scaled_size_keeps_the_aspect_ratio_and_covers_the_crop():
    assert scaled_size((640, 480), (224, 224), 256) == (341, 256)
    assert scaled_size((480, 640), (224, 224), 256) == (256, 341)
    assert scaled_size((256, 256), (224, 224), 256) == (256, 256)
    assert scaled_size((50, 50), (24, 32), 30) == (32, 32)  # 30x30 would not cover a 32-wide crop
    assert centre_box((341, 256), (224, 224)) == (58, 16, 282, 240)


def test_resize_shorter_then_centre_crop_cuts_both_sides_equally():
    # 120 x 60: red left third, blue right third, green between; scaled to 64 x 32, the
    # 28-wide centre crop keeps columns 18..45, i.e. 3 columns of each outer band.
    image = Image.new("RGB", (120, 60), GREEN)
    image.paste(RED, (0, 0, 40, 60))
    image.paste(BLUE, (80, 0, 120, 60))
    pixels = to_model_pixels(image, 3, (28, 28), 32)
    assert pixels.shape == (28, 28, 3)
    assert np.all(pixels[:, :3] == np.float32(RED) / 255) and np.all(pixels[:, -3:] == np.float32(BLUE) / 255)
    assert np.all(pixels[:, 5:-5] == np.float32(GREEN) / 255)
    mirrored = pixels[:, ::-1][..., [2, 1, 0]]  # mirror left-right and swap red with blue
    np.testing.assert_allclose(pixels, mirrored, atol=1 / 255)
    stretched = to_model_pixels(image, 3, (28, 28), None)  # the old behaviour squeezes all three bands in
    assert stretched[:, :5, 0].mean() > 0.9 and stretched[:, -5:, 2].mean() > 0.9


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (225, 224), (301, 999), (224, 224)])
def test_the_photo_preset_gives_224_crops_from_any_shape(size):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    assert Preprocessor(PHOTO_PREPROCESS)([image]).shape == (1, 3, 224, 224)


def test_a_crop_from_a_portrait_photo_keeps_its_middle(tmp_path):
    image = Image.new("RGB", (40, 100), RED)
    image.paste(GREEN, (0, 24, 40, 76))
    pixels = to_model_pixels(image, 3, (20, 20), 20)  # 20 x 50, crop rows 15..34 of it: inside the green
    assert np.all(pixels == np.float32(GREEN) / 255)


# ----------------------------------------------------------------- torch == numpy
def odd_images(tmp_path) -> list:
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (53, 97, 3), dtype=np.uint8))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (53, 97), dtype=np.uint8)))
    depth = tmp_path / "depth.png"
    Image.fromarray(rng.integers(0, 65536, (71, 45), dtype=np.uint16)).save(depth)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rng.integers(0, 256, (33, 61, 3), dtype=np.uint8)).convert("CMYK").save(cmyk)
    return [
        photo,
        rgba,
        photo.convert("P"),
        Image.fromarray(rng.integers(0, 256, (129, 31), dtype=np.uint8)),
        Image.fromarray(rng.random((37, 41), dtype=np.float32)),
        depth,
        cmyk,
        sideways_photo(tmp_path / "phone.jpg"),
        rng.random((23, 29, 3)),
    ]


@pytest.mark.parametrize(
    "config",
    [
        PreprocessConfig(image_size=(28, 28), channels=1),
        PreprocessConfig(image_size=(21, 35), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)),
        PreprocessConfig(image_size=(24, 24), channels=3, mean=(127 / 255,), std=(128 / 255,), resize_shorter=27),
        PreprocessConfig(image_size=(19, 31), channels=1, mean=(0.3,), std=(0.6,), resize_shorter=25),
        PHOTO_PREPROCESS,
    ],
    ids=["stretch-grey", "stretch-rgb", "crop-square", "crop-wide-grey", "photo-preset"],
)
def test_torch_and_numpy_preprocessing_agree(tmp_path, config):
    images = odd_images(tmp_path)
    expected = Preprocessor(config)(images).numpy()
    got = runtime.preprocess(images, metadata_for(config))
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(images), *config.input_shape)
    assert np.abs(got - expected).max() < 1e-6
