"""Class-per-folder image collections: ``root/<class name>/<image files>``."""

from __future__ import annotations

from pathlib import Path

from fewshot_sdk.data.images import is_image_file
from fewshot_sdk.errors import InputError


def list_class_images(folder: str | Path) -> list[Path]:
    """The image files of one class folder, sorted; refuses missing or empty folders."""
    path = Path(folder)
    if not path.exists():
        raise InputError(f"folder not found: {path}")
    if not path.is_dir():
        raise InputError(f"expected a folder of images but {path} is a file")
    files = sorted(p for p in path.iterdir() if is_image_file(p))
    if not files:
        raise InputError(f"{path} holds no image files (png, jpg, bmp, gif, tiff, webp)")
    return files


def scan_class_folders(root: str | Path) -> dict[str, list[Path]]:
    """``{class name: image files}`` for every subfolder of ``root`` (hidden ones skipped)."""
    path = Path(root)
    if not path.exists():
        raise InputError(f"folder not found: {path}")
    if not path.is_dir():
        raise InputError(f"expected a folder with one subfolder per class but {path} is a file")
    subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise InputError(f"{path} has no class subfolders: put each class's images in its own subfolder")
    return {sub.name: list_class_images(sub) for sub in subfolders}
