"""Uploaded bytes to images, and the class names a client may give.

An upload's file name is the client's word and is used only to name it in messages, never as a
path; a class name is stored in the task's JSON and shown on the page, never used as a path either,
and is refused all the same where it could mislead a person or a tool that would take it for one
(``../x``, a slash, a control character). Images are opened from memory with the header read first,
so a picture above the pixel limit is refused before it is decoded.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable

from PIL import Image, UnidentifiedImageError

from fewshot_sdk.class_names import class_names_problem
from fewshot_sdk.errors import InputError
from fewshot_sdk.serve.errors import TooLarge

#: Longer names do not fit a page or a log line, and are no one's class name.
MAX_CLASS_NAME = 100
#: What browsers and HTTP clients percent-encode in a multipart field's name: control characters and quotes.
ESCAPED_IN_FIELD_NAMES = re.compile(r"%(?:[01][0-9a-fA-F]|7[fF]|22)")


def field_name(raw: str) -> str:
    """A multipart field's name as the client meant it: ``line%0Abreak`` is a name with a line break in it,
    to be refused as one (browsers escape only these characters, so only these are unescaped)."""
    return ESCAPED_IN_FIELD_NAMES.sub(lambda match: chr(int(match.group()[1:], 16)), raw)


def shown(name: str | None, limit: int = 80) -> str:
    """A client-given name as it may appear in a message: printable, and short."""
    text = "".join(char if char.isprintable() else "?" for char in (name or "unnamed upload"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_image(name: str | None, data: bytes, max_pixels: int) -> Image.Image:
    """One uploaded file as a decoded PIL image, or an ``InputError`` naming the upload."""
    label = repr(shown(name))
    if not data:
        raise InputError(f"upload {label} is empty: send an image file (png, jpg, bmp, gif, tiff, webp)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(
                    f"upload {label} is {width}x{height} pixels, above the {max_pixels:,}-pixel limit "
                    "(fewshot serve --max-pixels): downscale it first"
                )
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"upload {label} is too large to decode safely: downscale it first") from None
    except UnidentifiedImageError:
        raise InputError(f"upload {label} is not an image PIL can read (png, jpg, bmp, gif, tiff, webp)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files, as PIL words them
        raise InputError(f"upload {label} is not a readable image ({one_phrase(exc)})") from None
    return image


def one_phrase(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def check_class_names(names: Iterable[str]) -> list[str]:
    """``names`` if each is usable as a class name; else an ``InputError`` naming the first that is not."""
    names = list(names)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"class name {shown(name)!r} is empty: name each class")
        if len(name) > MAX_CLASS_NAME:
            raise InputError(f"class name {shown(name)!r} is longer than {MAX_CLASS_NAME} characters: shorten it")
        if "/" in name or "\\" in name or name.strip() in (".", ".."):
            raise InputError(f"class name {shown(name)!r} looks like a path: use a plain name, without / \\ or ..")
        if name != name.strip():
            raise InputError(f"class name {shown(name)!r} starts or ends with spaces: trim it")
    problem = class_names_problem(names)
    if problem is not None:
        raise InputError(f"{shown(problem, 200)}: rename that class")
    return names
