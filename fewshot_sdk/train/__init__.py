"""Meta-training and the evaluation protocol (the checkpoint format is ``fewshot_sdk.checkpoint``)."""

from fewshot_sdk.train.evaluate import evaluate_episodes, evaluate_lake_runs
from fewshot_sdk.train.loop import TrainConfig, meta_train

__all__ = ["TrainConfig", "evaluate_episodes", "evaluate_lake_runs", "meta_train"]
