"""What one meta-update reports: its mean task loss and, for classification, its query accuracy.

Every method's meta-gradient hook adds to one of these, so the training loop reads the
same two figures whatever the method, and regression never reports an "accuracy".
"""

from __future__ import annotations

from torch import Tensor


class StepMetrics:
    """Sums over the tasks of one meta-batch; ``summary`` gives the means."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.tasks = 0
        self.correct = 0
        self.queries = 0

    def add(self, loss: Tensor, outputs: Tensor | None = None, targets: Tensor | None = None, tasks: int = 1) -> None:
        """``loss`` is the mean over ``tasks`` tasks; accuracy counts where the targets are class labels."""
        self.loss_sum += float(loss.detach()) * tasks
        self.tasks += tasks
        if outputs is not None and targets is not None and not targets.is_floating_point():
            self.correct += int((outputs.detach().argmax(-1) == targets).sum())
            self.queries += targets.numel()

    def summary(self) -> dict[str, float]:
        result = {"loss": self.loss_sum / max(self.tasks, 1)}
        if self.queries:
            result["accuracy"] = self.correct / self.queries
        return result
