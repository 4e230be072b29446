"""Opening user images safely and turning them into model pixels, with PIL and numpy alone (no torch).

Shared by the torch preprocessing (:mod:`fewshot_sdk.data.images`) and the torch-free ONNX
runtime (:mod:`fewshot_sdk.export.runtime`): both take everything geometric and photometric
(orientation, pixel mode, resize, crop, [0, 1]) from :func:`to_model_pixels` and only normalise
on their own, so an exported model sees exactly the pixels the torch model saw, and both refuse
bad files with the same one-line messages.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from fewshot_sdk.errors import InputError

ImageLike = str | os.PathLike | Image.Image | np.ndarray

#: Refuse images above this many pixels before decoding them (decompression bombs).
MAX_IMAGE_PIXELS = 64_000_000

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

#: Integer modes whose values are 16-bit intensities (PIL opens 16-bit PNGs and TIFFs as these).
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
#: Modes with an alpha channel, composited on white before anything else.
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})


def check_regular_file(path: Path, what: str) -> None:
    """Refuse, before opening, what is not a readable regular file: a FIFO or device would block or never end."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except OSError as exc:  # a name too long, a link loop, a folder we may not enter
        raise InputError(f"cannot read {what} {str(path)[:200]}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(status.st_mode):
        raise InputError(f"expected an {what} file but {path} is a folder")
    if not stat.S_ISREG(status.st_mode):
        raise InputError(f"{path} is not a regular file (a FIFO, socket or device): give an {what} file")


def load_image(item: ImageLike) -> Image.Image:
    """Open one image, with errors that name the file; refuses decompression bombs."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        return image_from_array(item)
    if not isinstance(item, (str, bytes, os.PathLike)):
        raise InputError(
            f"cannot read an image from a {type(item).__name__}: pass a file path, a PIL image or a numpy array"
        )
    path = Path(os.fsdecode(item))
    check_regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"{path} is {width}x{height} pixels, above the {MAX_IMAGE_PIXELS:,}-pixel limit; downscale it first"
                )
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path} is too large to decode safely ({exc}); downscale it first") from None
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image PIL can read (png, jpg, bmp, gif, tiff, webp)") from None
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    return image


#: The numpy images read, by dtype: uint8 0..255, uint16 0..65535, other integers and bool within
#: 0..255 / 0..1, floats in [0, 1]. Anything else is refused rather than clipped into another picture.
ARRAY_DTYPES = "uint8 (0..255), uint16 (0..65535), other integers within 0..255, bool, or floats within [0, 1]"


def image_from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InputError(f"a numpy image must be HxW or HxWxC with C in 1, 3, 4; got shape {array.shape}")
    kind = array.dtype.kind
    if kind not in "biuf" or array.size == 0:
        raise InputError(f"a numpy image holds {ARRAY_DTYPES}; got an empty array or dtype {array.dtype}")
    if kind == "b":
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.uint16:  # 16-bit data: its range is 0..65535, not 0..1 (which would saturate it)
        array = array.astype(np.float32) / np.float32(65535.0)
    elif kind in "iu" and array.dtype != np.uint8:
        if int(array.min()) < 0 or int(array.max()) > 255:
            raise InputError(f"a {array.dtype} numpy image must lie within 0..255; a numpy image holds {ARRAY_DTYPES}")
        array = array.astype(np.uint8)
    if array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise InputError("the numpy image contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise InputError(
                f"a float numpy image must lie within [0, 1], got {low:g}..{high:g}: divide 0..255 data by 255"
            )
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images on white, as a viewer shows them (not on black).

    Covers alpha modes, palette images (with or without a transparent entry) and 1-bit,
    grey or RGB images whose PNG names one colour transparent (``info["transparency"]``);
    other images come back unchanged.
    """
    keyed = image.mode in ("1", "L", "RGB") and "transparency" in image.info
    if image.mode in ("P", "PA") or keyed:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        return background.convert("RGB")
    return image


def to_model_pixels(
    image: Image.Image, channels: int, image_size: tuple[int, int], resize_shorter: int | None = None
) -> np.ndarray:
    """The pixels a model consumes, before normalisation: float32 in [0, 1], HxW (1 channel) or HxWx3.

    1. Orientation: an EXIF (or XMP) Orientation tag is applied, so a phone photo stored
       sideways comes out the way every viewer shows it.
    2. Pixel mode: transparency is composited on white (:func:`flatten_alpha`); CMYK,
       YCbCr, LAB, HSV and palette images become RGB; RGB becomes grey with PIL's luma
       weights when ``channels`` is 1 and grey is replicated when it is 3. 8-bit images
       go through PIL's uint8 modes, bit for bit as before this function existed (the
       bundled Omniglot models were trained on that). 16-bit images (``I;16*`` and ``I``,
       e.g. 16-bit PNGs) are divided by 65535 and float 'F' images are taken as [0, 1]
       when no value exceeds 1, else as 0-255 (what PIL's ``convert("F")`` of an 8-bit image holds);
       both are resized in PIL's float mode (PIL's ``convert("L")`` would clip every value
       above 255 to white) and clipped to [0, 1].
    3. Geometry, with PIL bilinear (``reducing_gap=None``, the exact filter):
       ``resize_shorter`` None stretches the image to ``image_size`` (h, w); an int scales
       it, keeping the aspect ratio, so that the shorter side is ``resize_shorter`` pixels,
       then crops ``image_size`` from the centre (the ImageNet convention, e.g. 256 -> 224).
       If the crop is wider or taller than that scaled image, the scale grows until it
       covers the crop (never padding). See :func:`scaled_size` and :func:`centre_box`.
    """
    name = getattr(image, "filename", "") or "the image"
    image = upright(image, name)
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        image = _float_intensities(image, name)
    else:
        image = _eight_bit(image, "L" if channels == 1 else "RGB", name)
    height, width = image_size
    if resize_shorter is None:
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    else:
        size = scaled_size(image.size, image_size, resize_shorter)
        if size[0] * size[1] > MAX_IMAGE_PIXELS:  # a 100000x1 strip passes the bomb guard, not its resize
            raise InputError(
                f"{name} is {image.size[0]}x{image.size[1]}: scaling its shorter side to {resize_shorter} would "
                f"make it {size[0]}x{size[1]} pixels; crop it to a photo's proportions first"
            )
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
        if image.size != (width, height):
            image = image.crop(centre_box(image.size, image_size))
    if image.mode == "F":
        array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)  # bilinear stays in range; clip is a copy
        return np.repeat(array[:, :, None], 3, axis=2) if channels == 3 else array
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def scaled_size(size: tuple[int, int], crop: tuple[int, int], resize_shorter: int) -> tuple[int, int]:
    """(width, height) an image of ``size`` (w, h) is resized to before a centre ``crop`` (h, w).

    The shorter side becomes ``resize_shorter`` and the other keeps the aspect ratio,
    rounded with Python's ``round``; if that would not cover the crop, the scale is the
    smallest that does. Written as the obvious float formula on purpose, so a runtime in
    another language reproduces it: ``scale = max(s / min(w, h), cw / w, ch / h)``.
    """
    width, height = size
    crop_height, crop_width = crop
    scale = max(resize_shorter / min(width, height), crop_width / width, crop_height / height)
    return round(width * scale), round(height * scale)


def centre_box(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of a ``crop`` (h, w) centred in ``size`` (w, h).

    Integer offsets ``(w - cw) // 2``: an odd margin leaves the extra pixel on the right / bottom.
    """
    width, height = size
    crop_height, crop_width = crop
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def upright(image: Image.Image, name: str = "the image") -> Image.Image:
    """The image as viewers show it: its EXIF Orientation applied (and dropped); unchanged without one.

    Asking for the tag first keeps images without one (nearly all scans and PNGs) uncopied.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as exc:  # a damaged EXIF block
        raise InputError(f"cannot read the EXIF orientation of {name}: {exc}") from None
    return image


def _eight_bit(image: Image.Image, mode: str, name: str) -> Image.Image:
    image = flatten_alpha(image)  # unchanged unless it has transparency
    if image.mode not in ("1", "L", "RGB"):
        try:
            image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
        except ValueError:
            raise InputError(f"{name} has pixel mode {image.mode!r}, which cannot be converted to RGB") from None
    return image if image.mode == mode else image.convert(mode)


def _float_intensities(image: Image.Image, name: str) -> Image.Image:
    """A 16-bit or float image as a PIL 'F' image of [0, 1] intensities (see :func:`to_model_pixels`)."""
    array = np.asarray(image).astype(np.float32)  # I;16B arrives big-endian ('>u2'); astype makes it native
    if image.mode == "F":
        if not np.isfinite(array).all():
            raise InputError(f"{name} contains NaN or infinite values")
        if array.size and array.max() > 1.0:
            array = array / np.float32(255.0)
    else:
        array = array / np.float32(65535.0)
    return Image.fromarray(np.clip(array, 0.0, 1.0))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


#: A pixel is coloured when its channels differ by more than this (of 255); grey stored as
#: RGB differs by 0, JPEG noise and cream paper by well under it.
COLOUR_CHROMA = 48
#: An image is colour when more than this fraction of its sampled pixels are coloured.
COLOUR_FRACTION = 0.10
#: Side of the nearest-neighbour subsample the colour test reads.
COLOUR_SAMPLE_SIDE = 32


def looks_colourful(image: Image.Image) -> bool:
    """Whether a PIL image has real colour, not grey stored as RGB (judged on a subsample, transparency on white)."""
    width, height = image.size
    small = image.resize((min(width, COLOUR_SAMPLE_SIDE), min(height, COLOUR_SAMPLE_SIDE)), Image.Resampling.NEAREST)
    pixels = np.asarray(flatten_alpha(small).convert("RGB")).astype(np.int16)
    chroma = pixels.max(axis=2) - pixels.min(axis=2)
    return bool((chroma > COLOUR_CHROMA).mean() > COLOUR_FRACTION)


#: Both sides more than this many times the model's input: not a glyph. (Omniglot's own
#: 105x105 scans are 3.75x a 28x28 input and must pass.)
MAX_SIZE_RATIO = 4.0
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


def photo_description(image: Image.Image, image_size: tuple[int, int]) -> str | None:
    """``"RGB 451x300"`` when ``image`` looks like a photo to a model taking ``image_size`` inputs, else None.

    A photo is far larger than the model's input on both sides whatever its colours, or has real
    colour (:func:`looks_colourful`). Called on images being decoded anyway, so it reads no file.
    """
    width, height = image.size
    grey = image.mode in _GREY_MODES or image.mode.startswith("I;")
    if min(width / image_size[1], height / image_size[0]) > MAX_SIZE_RATIO:
        return f"{'greyscale' if grey else 'RGB'} {width}x{height}"
    if grey or width * height > MAX_IMAGE_PIXELS:
        return None
    return f"RGB {width}x{height}" if looks_colourful(image) else None
