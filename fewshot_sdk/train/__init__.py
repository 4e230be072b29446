"""Meta-training, the evaluation protocol and the checkpoint format."""

from fewshot_sdk.train.checkpoint import load_learner, save_learner
from fewshot_sdk.train.evaluate import evaluate_episodes, evaluate_lake_runs
from fewshot_sdk.train.loop import TrainConfig, meta_train

__all__ = ["TrainConfig", "evaluate_episodes", "evaluate_lake_runs", "load_learner", "meta_train", "save_learner"]
