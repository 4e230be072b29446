"""Writing evaluation figures back into the checkpoint folder they describe, never into the installed package.

A bundled model's folder lies inside the installed package: figures written there would change what every user of
that installation loads and lists, and would vanish (or be refused, on a read-only install) at the next upgrade.
Figures of a bundled model belong in a copy of the user's own, saved first.
"""

from __future__ import annotations

from pathlib import Path

from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.registry import zoo_path

#: The installed package: nothing is ever recorded under it.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def record_folder(model: str | Path) -> Path:
    """The checkpoint folder whose ``config.json`` takes ``model``'s figures; a bundled model is refused.

    ``model`` is resolved as loading resolves it: an existing folder first, then a bundled name. Checked before
    evaluating, so a refusal costs nothing.
    """
    path = Path(model)
    folder = path if path.exists() else zoo_path(str(model))
    if folder is None:
        raise InputError(f"no checkpoint folder or bundled model named {str(model)!r} to record results into")
    if folder.resolve().is_relative_to(PACKAGE_DIR):
        raise InputError(
            f"{model} is a bundled model and results are never written into the installed package "
            f"({folder}): save a copy first (copy that folder, or fs.load({path.name!r}).save(FOLDER)) and "
            "evaluate the copy with --record"
        )
    return folder


def record_results(learner: Learner, model: str | Path) -> Path:
    """Rewrite ``model``'s checkpoint folder with ``learner``'s provenance, its figures included; the folder.
    :func:`record_folder` is asked again here, so no caller can skip the refusal."""
    folder = record_folder(model)
    learner.save(folder, overwrite=True)
    return folder
