"""Session-wide test setup.

Triton kernels are compiled for the device when they are first *defined*, so the
interpreter switch must be set before anything imports ``fewshot_sdk.kernels``:
this file is the first thing pytest imports.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The real Omniglot background zips (``../shared/data/omniglot``, beside the repo in CI)."""
    if not (SHARED_OMNIGLOT / "images_background_small1.zip").is_file():
        pytest.fail(f"Omniglot data not found at {SHARED_OMNIGLOT}: the tests need ../shared beside the repo")
    return SHARED_OMNIGLOT


@pytest.fixture(scope="session")
def minimal_omniglot_dir(omniglot_dir, tmp_path_factory) -> Path:
    """A folder with only the minimal background zips and Lake's runs: the fast protocol, for training tests.

    (``omniglot_dir`` also holds the full background and evaluation sets, so training on it
    decodes 19,280 images.)
    """
    from fewshot_sdk.data.omniglot import BACKGROUND_ZIPS, LAKE_RUNS_ZIP

    folder = tmp_path_factory.mktemp("omniglot-minimal")
    for name in (*BACKGROUND_ZIPS, LAKE_RUNS_ZIP):
        (folder / name).symlink_to(omniglot_dir / name)
    return folder


@pytest.fixture(scope="session")
def omniglot_characters(minimal_omniglot_dir):
    """The 242 characters of the minimal background splits at 28x28 (decoded once per session, ~0.5 s)."""
    from fewshot_sdk.config import PreprocessConfig
    from fewshot_sdk.data.images import Preprocessor
    from fewshot_sdk.data.omniglot import load_background_characters

    return load_background_characters(minimal_omniglot_dir, Preprocessor(PreprocessConfig()))


@pytest.fixture(scope="session")
def omniglot_splits(omniglot_characters):
    from fewshot_sdk.data.omniglot import split_characters

    return split_characters(omniglot_characters, split_seed=0)


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture()
def image_folder(tmp_path):
    """A support root with two classes of tiny synthetic images: ``root/{dark,light}/*.png``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "support"
    for name, level in (("dark", 40), ("light", 220)):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = np.clip(rng.normal(level, 10, size=(32, 32)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """An untrained, seeded ProtoNet checkpoint folder for CLI tests."""
    import torch

    import fewshot_sdk as fs

    torch.manual_seed(0)
    return str(fs.create("protonet").save(tmp_path_factory.mktemp("ckpt") / "model"))
