"""One module per method; importing this package registers them all.

Every module in this folder (except ``base`` and private ``_*`` helpers) is
imported, so adding a method is adding its file: no list to keep in sync.
"""

import importlib
import pkgutil

from fewshot_sdk.methods.base import Learner

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Learner"]
