"""Omniglot: the background and evaluation sets (zips or extracted folders) and Lake's one-shot runs.

Two protocols, chosen by what a folder holds:

- **Full** (``images_background.zip`` + ``images_evaluation.zip``, the papers' setting):
  train and validate on the 30 background alphabets, validation being whole held-out
  alphabets (:func:`split_alphabets`, on a seed recorded in the checkpoint); test on the
  20 evaluation alphabets, which nothing trains or selects on.
- **Minimal** (``images_background_small1/2.zip``, 8 alphabets: fast, for tests): the two
  splits overlap (Greek and Latin are in both), so characters are keyed by (alphabet,
  character), kept once and split into train / val / test (:func:`split_characters`).

Either way training characters are augmented with 90-degree rotations as new classes, as in
the literature. ``all_runs.zip`` is a test set only, read by :func:`load_lake_runs` for evaluation
and by nothing that trains or selects a model.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from fewshot_sdk.data.images import Preprocessor, is_image_file
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.errors import InputError

FULL_BACKGROUND_ZIP = "images_background.zip"
EVALUATION_ZIP = "images_evaluation.zip"
BACKGROUND_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
LAKE_RUNS_ZIP = "all_runs.zip"

CharacterKey = tuple[str, str]


def _zip_characters(path: Path) -> dict[CharacterKey, list[tuple[str, bytes]]]:
    """``{(alphabet, character): [(file name, png bytes)]}`` from one background zip."""
    found: dict[CharacterKey, list[tuple[str, bytes]]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                parts = name.split("/")
                if len(parts) < 3 or not parts[-1].lower().endswith(".png") or "__MACOSX" in parts:
                    continue
                key = (parts[-3], parts[-2])
                found.setdefault(key, []).append((parts[-1], archive.read(name)))
    except zipfile.BadZipFile:
        raise InputError(f"{path} is not a valid zip file") from None
    return found


def _folder_characters(root: Path) -> dict[CharacterKey, list[tuple[str, Path]]]:
    """The same mapping from an extracted ``<root>/<Alphabet>/<character>/*.png`` tree."""
    found: dict[CharacterKey, list[tuple[str, Path]]] = {}
    for character_dir in sorted(p for p in root.glob("*/*") if p.is_dir()):
        files = sorted(p for p in character_dir.iterdir() if is_image_file(p))
        if files:
            found[(character_dir.parent.name, character_dir.name)] = [(p.name, p) for p in files]
    return found


def background_sources(data: str | Path | Sequence[str | Path]) -> list[Path]:
    """The background zips or extracted folders under ``data``: the full set if there, else the minimal splits.

    ``data`` may also be one zip or tree, or a list of them (read together, de-duplicated).
    """
    if isinstance(data, Sequence) and not isinstance(data, str):
        return [source for item in data for source in background_sources(item)]
    path = Path(data)
    if not path.exists():
        raise InputError(f"Omniglot data not found: {path}")
    if path.is_file():
        return [path]
    full = full_background_source(path)
    if full is not None and full.is_file():
        return [full]
    zips = [path / name for name in BACKGROUND_ZIPS if (path / name).is_file()]
    if zips:
        return zips
    if full is not None:
        return [full]
    folders = sorted(p for p in path.glob("images_background*") if p.is_dir())
    if folders:
        return folders
    if any(p.is_dir() for p in path.glob("*/*")):
        return [path]
    raise InputError(
        f"{path} holds neither {FULL_BACKGROUND_ZIP} nor {' nor '.join(BACKGROUND_ZIPS)} nor an "
        "<alphabet>/<character>/*.png tree"
    )


def full_background_source(folder: Path) -> Path | None:
    """The full 30-alphabet background set in ``folder``: its zip, else its extracted folder."""
    for candidate in (folder / FULL_BACKGROUND_ZIP, folder / "images_background"):
        if candidate.is_file() if candidate.suffix == ".zip" else candidate.is_dir():
            return candidate
    return None


def has_full_set(data: str | Path) -> bool:
    """Whether ``data`` is a folder holding the full background and evaluation sets (the papers' protocol)."""
    path = Path(data)
    return path.is_dir() and full_background_source(path) is not None and evaluation_source(path) is not None


def evaluation_source(data: str | Path) -> Path | None:
    """The evaluation set (zip or extracted folder) beside the background set, if ``data`` is a folder holding one."""
    path = Path(data)
    for candidate in (path / EVALUATION_ZIP, path / "images_evaluation"):
        if candidate.exists():
            return candidate
    return None


def load_background_characters(data: str | Path | Sequence[str | Path], preprocessor: Preprocessor) -> LabelledImages:
    """All background characters, de-duplicated, as classes named ``Alphabet/characterNN``."""
    return load_characters(background_sources(data), preprocessor, str(data))


def load_evaluation_characters(data: str | Path, preprocessor: Preprocessor) -> LabelledImages:
    """The 20 evaluation alphabets (test only), as classes named ``Alphabet/characterNN``."""
    source = evaluation_source(data)
    if source is None:
        raise InputError(f"{data} holds no {EVALUATION_ZIP}: the evaluation set is the full protocol's test set")
    return load_characters([source], preprocessor, str(source))


def load_characters(sources: list[Path], preprocessor: Preprocessor, label: str) -> LabelledImages:
    merged: dict[CharacterKey, list] = {}
    for source in sources:
        characters = _zip_characters(source) if source.is_file() else _folder_characters(source)
        for key, files in characters.items():
            merged.setdefault(key, files)
    if not merged:
        raise InputError(f"no Omniglot characters found in {label}")
    keys = sorted(merged)
    images, labels = [], []
    for index, key in enumerate(keys):
        opened = [_open(item, f"{key[0]}/{key[1]}/{name}") for name, item in merged[key]]
        images.append(torch.stack([preprocessor.image_to_tensor(im) for im in opened]))
        labels.append(torch.full((len(opened),), index, dtype=torch.long))
    names = tuple(f"{alphabet}/{character}" for alphabet, character in keys)
    return LabelledImages(torch.cat(images), torch.cat(labels), names)


def minimal_split_alphabets(data: str | Path) -> set[str]:
    """The alphabets of the minimal background splits beside ``data`` (read from the zips' file lists)."""
    found: set[str] = set()
    for name in BACKGROUND_ZIPS:
        path = Path(data) / name
        if path.is_file():
            with zipfile.ZipFile(path) as archive:
                found.update(n.split("/")[1] for n in archive.namelist() if n.count("/") >= 2)
    return found


def _open(item: bytes | Path, label: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(item) if isinstance(item, bytes) else item)
        image.load()
    except OSError as exc:
        raise InputError(f"cannot read Omniglot image {label}: {exc}") from None
    return image


@dataclass(frozen=True)
class OmniglotSplits:
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    split_seed: int


def split_characters(
    characters: LabelledImages,
    split_seed: int = 0,
    n_val: int = 22,
    n_test: int = 60,
    rotate_train: bool = True,
) -> OmniglotSplits:
    """Disjoint character-level train / val / test; rotations added to train only."""
    if n_val + n_test >= characters.num_classes:
        raise InputError(f"cannot hold out {n_val}+{n_test} of {characters.num_classes} characters")
    order = torch.randperm(characters.num_classes, generator=torch.Generator().manual_seed(split_seed)).tolist()
    test_ids, val_ids, train_ids = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    train = characters.subset_classes(sorted(train_ids))
    return OmniglotSplits(
        train=train.with_rotations() if rotate_train else train,
        val=characters.subset_classes(sorted(val_ids)),
        test=characters.subset_classes(sorted(test_ids)),
        split_seed=split_seed,
    )


def split_alphabets(
    characters: LabelledImages,
    split_seed: int = 0,
    n_val: int = 5,
    keep_in_train: Iterable[str] = (),
    rotate_train: bool = True,
) -> tuple[LabelledImages, LabelledImages, list[str]]:
    """Train / validation characters of the full background set, validation being ``n_val`` whole alphabets.

    Whole alphabets, so a validation episode within one alphabet (Lake's task) is as
    unseen as a test one. ``keep_in_train`` alphabets are never drawn for validation (the
    minimal splits' alphabets: a model warm-started from a minimal-split checkpoint has
    trained on their characters). Returns (train with rotations, val, val alphabet names).
    """
    alphabet_of = [name.split("/", 1)[0] for name in characters.class_names]
    kept = set(keep_in_train)
    candidates = [a for a in sorted(set(alphabet_of)) if a not in kept]
    if n_val >= len(candidates):
        raise InputError(f"cannot hold out {n_val} of the {len(candidates)} alphabets that may be held out")
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(split_seed)).tolist()
    held_out = sorted(candidates[i] for i in order[:n_val])
    val_ids = [c for c, alphabet in enumerate(alphabet_of) if alphabet in held_out]
    train_ids = [c for c, alphabet in enumerate(alphabet_of) if alphabet not in held_out]
    train = characters.subset_classes(train_ids)
    return (train.with_rotations() if rotate_train else train), characters.subset_classes(val_ids), held_out


@dataclass(frozen=True)
class LakeRun:
    """One run of Lake's challenge: 20 training images (one per class), 20 test images."""

    name: str
    training: list[tuple[str, Image.Image]]
    test: list[tuple[str, Image.Image]]
    answers: list[int]


def load_lake_runs(path: str | Path) -> list[LakeRun]:
    """The 20 runs of ``all_runs.zip`` (or its extracted folder), answers included. Test data only."""
    source = Path(path)
    if source.is_dir() and (source / LAKE_RUNS_ZIP).is_file():
        source = source / LAKE_RUNS_ZIP
    if not source.exists():
        raise InputError(f"Lake runs not found: {source}")
    files = _read_tree(source)
    run_names = sorted({name.split("/")[0] for name in files if re.fullmatch(r"run\d+/class_labels\.txt", name)})
    if not run_names:
        raise InputError(f"{source} holds no runNN/class_labels.txt: is it Omniglot's all_runs?")
    runs = []
    for run in run_names:
        try:
            lines = files[f"{run}/class_labels.txt"].decode().splitlines()
            pairs = [(test, train) for test, train in (line.split() for line in lines if line.strip())]
            training_names = sorted(n for n in files if n.startswith(f"{run}/training/") and n.endswith(".png"))
            index_of = {name: i for i, name in enumerate(training_names)}
            runs.append(
                LakeRun(
                    name=run,
                    training=[(n, _open(files[n], n)) for n in training_names],
                    test=[(test, _open(files[test], test)) for test, _ in pairs],
                    answers=[index_of[train] for _, train in pairs],
                )
            )
        except (KeyError, ValueError, UnicodeDecodeError) as exc:  # a line without two names, a missing image
            raise InputError(
                f"{source}: {run}/class_labels.txt does not match the run's images ({type(exc).__name__}: {exc}); "
                "is it Omniglot's all_runs?"
            ) from None
    return runs


def _read_tree(source: Path) -> dict[str, bytes]:
    if source.is_file():
        try:
            with zipfile.ZipFile(source) as archive:
                return {n: archive.read(n) for n in archive.namelist() if not n.endswith("/")}
        except zipfile.BadZipFile:
            raise InputError(f"{source} is not a valid zip file") from None
    return {str(p.relative_to(source)): p.read_bytes() for p in source.rglob("*") if p.is_file()}
