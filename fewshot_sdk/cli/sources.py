"""Reading the CLI's --support and --query paths into a SupportSet and a list of image files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fewshot_sdk.data.folders import list_class_images
from fewshot_sdk.errors import InputError

if TYPE_CHECKING:
    from fewshot_sdk.api import SupportSet


def support_from_options(folders: list[Path]) -> SupportSet:
    """Several --support: one class each. One --support: a root whose subfolders are the classes."""
    from fewshot_sdk.api import SupportSet  # torch: only once a torch model is going to be adapted

    if len(folders) == 1:
        root = folders[0]
        if root.is_dir() and not has_class_subfolders(root):
            raise InputError(
                f"only one class given ({root}): repeat --support once per class, or pass one folder "
                "whose subfolders are the classes"
            )
        return SupportSet.from_folder(root)
    return SupportSet.from_folders(folders)


def has_class_subfolders(folder: Path) -> bool:
    """A root of class folders, rather than one class's folder of images (hidden folders do not count)."""
    return any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


def classes_to_add(folders: list[Path]) -> dict[str, list[Path]]:
    """``--add-support``: each folder is one class named after it, or a root whose subfolders are classes."""
    from fewshot_sdk.data.folders import scan_class_folders

    classes: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            raise InputError(f"--add-support {folder}: not a folder")
        if has_class_subfolders(folder):
            found = scan_class_folders(folder)
        else:
            found = {folder.resolve().name: list_class_images(folder)}
        for name, files in found.items():
            if name in classes:
                raise InputError(f"--add-support: two classes are both named {name!r}")
            classes[name] = list(files)
    return classes


def expand_queries(paths: list[Path]) -> list[Path]:
    """Query files as given; a folder stands for the images in it."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(list_class_images(path))
        elif not path.exists():
            raise InputError(f"query image not found: {path}")
        else:
            files.append(path)
    return files
