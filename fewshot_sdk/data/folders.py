"""Class-per-folder image collections: ``root/<class name>/<image files>``."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from fewshot_sdk.errors import InputError
from fewshot_sdk.imageio import is_image_file


def _existing_folder(folder: str | Path, expected: str) -> Path:
    path = Path(folder)
    try:
        if not path.exists():
            raise InputError(f"folder not found: {path}")
        if not path.is_dir():
            raise InputError(f"expected {expected} but {path} is a file")
    except OSError as exc:  # a name too long, a link loop
        raise InputError(f"cannot read folder {str(path)[:200]}: {exc.strerror or exc}") from None
    return path


def _entries(path: Path) -> list[Path]:
    """The folder's entries, or one line saying why they cannot be listed (permissions)."""
    try:
        return list(path.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list {path}: {exc.strerror or exc}") from None


def list_class_images(folder: str | Path) -> list[Path]:
    """The image files of one class folder, sorted; refuses missing or empty folders."""
    path = _existing_folder(folder, "a folder of images")
    files = sorted(p for p in _entries(path) if is_image_file(p))
    if not files:
        raise InputError(f"{path} holds no image files (png, jpg, bmp, gif, tiff, webp)")
    return files


def scan_class_folders(root: str | Path) -> dict[str, list[Path]]:
    """``{class name: image files}`` for every subfolder of ``root`` (hidden ones skipped)."""
    path = _existing_folder(root, "a folder with one subfolder per class")
    entries = [p for p in _entries(path) if not p.name.startswith(".")]
    broken = [p.name for p in entries if p.is_symlink() and not p.exists()]  # a dangling link or a link loop
    if broken:
        raise InputError(f"{path}: {broken[0]} is a link that leads nowhere (or to itself); fix or remove it")
    subfolders = sorted(p for p in entries if p.is_dir())
    if not subfolders:
        raise InputError(f"{path} has no class subfolders: put each class's images in its own subfolder")
    return {sub.name: list_class_images(sub) for sub in subfolders}


def linked_class_groups(names: list[str]) -> list[list[str]]:
    """Classes that must land on the same side of a split, as groups (most are alone).

    A class ``X_easy`` is the same objects as ``X`` (Caltech-101's ``Faces_easy`` is a
    tighter crop of the same faces as ``Faces``); splitting them apart would put test
    images' twins in training.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.removesuffix("_easy"), []).append(name)
    return list(groups.values())


def split_class_folders(
    classes: dict[str, list[Path]], split_seed: int, n_val: int, n_test: int
) -> dict[str, dict[str, list[Path]]]:
    """Class-disjoint train / val / test (``{split: {class: files}}``), linked classes kept together.

    ``n_val`` and ``n_test`` count groups of linked classes; the order is a seeded shuffle
    of the groups, so a split seed names one split for good.
    """
    import torch

    groups = linked_class_groups(sorted(classes))
    if n_val + n_test >= len(groups):
        raise InputError(
            f"cannot hold out {n_val} validation and {n_test} test classes of {len(groups)}: "
            "meta-training needs classes of its own; add class folders"
        )
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(split_seed)).tolist()
    picked = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    return {
        split: {name: classes[name] for name in sorted(n for g in indices for n in groups[g])}
        for split, indices in picked.items()
    }


def image_statistics(files: list[Path], sample: int = 120) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(channels, mean, std) of a class-folder dataset, from an even sample of its images.

    A model trained from scratch on someone's folders should see their colour, normalised
    by their statistics, not Omniglot's greyscale 0.92 / 0.22 (the defaults). Colour means
    real chroma, so greyscale scans saved as RGB stay one channel.
    """
    import numpy as np

    from fewshot_sdk.imageio import load_image, looks_colourful, to_model_pixels

    images = [load_image(path) for path in even_sample(files, sample)]
    colour = any(looks_colourful(image) for image in images)
    channels = 3 if colour else 1
    pixels = np.stack([to_model_pixels(image, channels, (64, 64)) for image in images]).reshape(
        len(images), 64 * 64, -1
    )
    mean = pixels.mean(axis=(0, 1))
    std = np.maximum(pixels.std(axis=(0, 1)), 1e-3)
    return channels, tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


T = TypeVar("T")


def even_sample(items: list[T], count: int) -> list[T]:
    """``count`` items spread evenly from first to last (all of them when there are no more)."""
    if len(items) <= count:
        return items
    last = len(items) - 1
    return [items[i * last // (count - 1)] for i in range(count)]
