"""The task network: what ``adapt`` builds once for a task, ``predict`` runs and ``export_onnx`` serialises.

A method turns a task state into a scoring module (``Learner.export_module``: prototypes as a linear
head, stored embeddings, memories, adapted weights) on the learner's inference twin; this adds the
method's probability rule and the default novelty, in eval mode without autograd. ``predict`` and
the exporter run the same module, so an exported file and ``predict`` agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fewshot_sdk.task.open_set import max_logit_novelty


class TaskNetwork(nn.Module):
    """images -> (logits, probs, novelty) for one adapted task; immutable once built.

    ``scorer`` maps a model-ready batch to logits, or to ``(logits, novelty)``; ``probabilities``
    is the method's rule from logits to probabilities (softmax for most; Siamese and Relation
    normalise per-class sigmoid scores).
    """

    def __init__(self, scorer: nn.Module, probabilities: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.scorer = scorer
        self.probabilities = probabilities
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> TaskNetwork:
        """Stays in eval mode: a task network only infers."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.scorer(images)
        logits, novelty = outputs if isinstance(outputs, tuple) else (outputs, max_logit_novelty(outputs))
        return logits, self.probabilities(logits), novelty

    @property
    def device(self) -> torch.device:
        """Where the network runs (it never moves: it was built there)."""
        device = self.__dict__.get("_device")
        if device is None:
            tensor = next(self.parameters(), None)
            if tensor is None:
                tensor = next(self.buffers(), None)
            device = self.__dict__["_device"] = tensor.device if tensor is not None else torch.device("cpu")
        return device

    def run(self, batch: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, probs, novelty) of a model-ready batch on the CPU, scored in chunks of ``batch_size``.

        A batch no larger than ``batch_size`` is scored as it is, unsplit. Under ``no_grad`` rather
        than ``inference_mode``, so the caller gets ordinary tensors without a copy.
        """
        device = self.device
        with torch.no_grad():
            if len(batch) <= batch_size:
                logits, probs, novelty = self(batch.to(device))
                return logits.cpu(), probs.cpu(), novelty.cpu()
            scored = [self(chunk.to(device)) for chunk in torch.split(batch, batch_size)]
        logits, probs, novelty = (torch.cat([outputs[i] for outputs in scored]).cpu() for i in range(3))
        return logits, probs, novelty
