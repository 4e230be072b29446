"""fewshot-sdk: adapt meta-learned models to a handful of labelled examples in milliseconds.

    import fewshot_sdk as fs
    learner = fs.load("protonet-omniglot")
    task = learner.adapt(fs.SupportSet.from_folder("shapes/"))
    pred = task.predict(["a.png", "b.png"])
"""

from fewshot_sdk.adapted import AdaptedModel, load_task
from fewshot_sdk.api import Prediction, SupportSet
from fewshot_sdk.errors import CheckpointError, FewShotError, InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.version import __version__
from fewshot_sdk.zoo import available, create, load

__all__ = [
    "AdaptedModel",
    "CheckpointError",
    "FewShotError",
    "InputError",
    "Learner",
    "Prediction",
    "SupportSet",
    "__version__",
    "available",
    "create",
    "load",
    "load_task",
]
