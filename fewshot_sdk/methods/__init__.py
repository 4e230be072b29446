"""One module per method; importing this package registers them all."""

from fewshot_sdk.methods import protonet
from fewshot_sdk.methods.base import Learner

__all__ = ["Learner", "protonet"]
