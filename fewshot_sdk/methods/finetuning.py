"""Test-time fine-tuning: the last stages of the backbone and a cosine head, trained on one support set.

A metric method embeds a support set with weights meta-learned elsewhere; on a far domain (X-rays,
satellite tiles, leaves) those features separate the new classes poorly, and no amount of
prototype arithmetic recovers what the features lost. Fine-tuning the end of the network on the
support set itself is the strongest answer the cross-domain literature has (BSCD-FSL, Guo et al.
2020; P>M>F, Hu et al. 2022). What is trained, per task, on a copy (the learner never changes):

- the last ``stages`` stages of the backbone that hold weights (batch norm folded into them where
  the inference twin folds it, so their biases play batch norm's affine part);
- a cosine classifier, ``scale * cos(f(x), w_k)``, its rows started at the normalised prototypes
  (Proto-MAML's initialisation, Triantafillou et al. 2020), so step 0 is the prototype classifier.

A fine-tuned task predicts with the tuned head's log-probabilities, plus ``untuned_weight`` times the
untuned task's (ProtoNet's prototypes, Matching's attention, ...) where that setting asks for it (an
ensemble of the two networks it runs anyway: the untuned tail gives novelty), which ``finetune="auto"``
turns on where the support holds several photos a class (measured on ProtoNet).

The support is seen as ``views`` random views per image (:mod:`fewshot_sdk.data.augment`); the
frozen prefix of the backbone runs once per view, and each of the ``steps`` full-batch Adam steps
runs only the tuned stages. The tuned weights and the head are the task's state (``finetuned.*``,
``head``), so a fine-tuned task saves, reloads and exports like any other; its novelty (and so
``reject``) is measured by the untuned network, as the untuned task of the same support measures it,
where the threshold of ``reject="auto"`` is calibrated.

Which methods fine-tune, and how a learner's hooks route a fine-tuned state here, is
:mod:`.finetunable`'s; this module knows backbones, heads and task-state tensors, not methods.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.augment import random_views
from fewshot_sdk.methods.base import class_means
from fewshot_sdk.methods.transductive_prototypes import refine
from fewshot_sdk.models.frozen import is_tracing

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from fewshot_sdk.config import PreprocessConfig
    from fewshot_sdk.models.backbones import Backbone

#: Task-state names: the tuned stages' tensors are ``finetuned.<stage>.<parameter>``.
TUNED_PREFIX = "finetuned."
HEAD = "head"
SCALE = "scale"
UNTUNED_WEIGHT = "untuned_weight"


#: Early stopping (``holdout``) needs this many support examples a class left to train on.
MIN_TRAINING_SHOTS = 2


class FineTuneSettings(StrictModel):
    """How ``adapt(support, finetune=...)`` trains the end of the network on the support set."""

    stages: int = Field(2, ge=1, le=64, description="last backbone stages holding weights that are tuned")
    steps: int = Field(20, ge=1, le=10_000, description="full-batch Adam steps over every view of the support")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam's learning rate for the tuned stages")
    head_lr: float = Field(1e-2, gt=0, le=10, description="Adam's learning rate for the cosine head")
    views: int = Field(4, ge=1, le=64, description="views per support image: itself, then random ones")
    flips: bool = Field(False, description="mirror views too (leave off where a mirror image means another class)")
    scale: float = Field(10.0, gt=0, le=1000, description="logits are scale * cosine similarity")
    seed: int = Field(0, ge=0, lt=2**63, description="seeds the views, so one support set gives one task")
    untuned_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="weight of the untuned prototypes' log-probabilities added to the tuned head's when predicting "
        "(an ensemble of the two networks a fine-tuned task runs); 0: the tuned head alone",
    )
    holdout: int = Field(
        0,
        ge=0,
        le=64,
        description="support examples a class held out to choose how many of the steps to take (early stopping); "
        f"used where every class keeps {MIN_TRAINING_SHOTS} or more besides them; 0: take every step",
    )

    @field_validator("lr", "head_lr", "scale", "untuned_weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


#: ``finetune="auto"`` from this many shots a class on: the last two weighted stages, 20 steps, cosine scale 5,
#: and the untuned task's log-probabilities in the prediction.
AUTO_FULL_FROM_SHOTS = 2

FineTune = Literal["auto"] | FineTuneSettings | None


class FineTuneOptions(StrictModel):
    """finetune: "auto", or settings of test-time fine-tuning (see fewshot_sdk.methods.finetuning); None: none"""

    finetune: FineTune = Field(
        None, description='"auto" or FineTuneSettings: tune the last backbone stages and a head on the support'
    )


def auto_settings(shots: int) -> FineTuneSettings:
    """``finetune="auto"``'s settings for the fewest support examples a class has.

    Chosen on two development domains (EuroSAT, PlantVillage; ``benchmarks/accuracy/finetune_rule.py``),
    never per dataset: with five shots, tuning the last MBConv block and the head convolution for 20 steps
    gained the most (+4.1 and +0.8 points); with one shot, tuning two stages lost points on EuroSAT, and
    the head convolution alone is the safer choice. Adding the untuned prototypes' log-probabilities to the
    tuned head's (``benchmarks/accuracy/finetune_readouts.py``) gained at five shots on both (+0.18, +0.72)
    and lost at one shot on one (+0.27, -0.72), so it is on from :data:`AUTO_FULL_FROM_SHOTS` only; with it,
    a cosine scale of 5 (softer logits, for training and for the sum) beat 10 and 3 on their mean (+0.68,
    +0.17). The head trained at scale 5 read out alone, without the sum, led on 30 episodes but tied on 100
    (EuroSAT +0.30, PlantVillage -0.31), so the sum stays. At two and three shots this rule beat the one-shot
    rule on both (2 shots: +1.96, +0.55; 3 shots: +1.25, +1.34), so it starts at :data:`AUTO_FULL_FROM_SHOTS`.
    """
    if shots >= AUTO_FULL_FROM_SHOTS:
        return FineTuneSettings(untuned_weight=1.0, scale=5.0)
    return FineTuneSettings(stages=1)


def resolve(finetune: FineTune, shots: int) -> FineTuneSettings | None:
    """The settings ``finetune`` stands for on a support with ``shots`` examples in its smallest class."""
    return auto_settings(shots) if finetune == "auto" else finetune  # type: ignore[return-value]


def weighted_stages(backbone: Backbone) -> list[int]:
    """Indices of the backbone's stages that hold weights (a pooling stage holds none)."""
    return [i for i, stage in enumerate(backbone.stages) if any(True for _ in stage.parameters())]


def first_tuned_stage(backbone: Backbone, stages: int) -> int:
    weighted = weighted_stages(backbone)
    return weighted[-min(stages, len(weighted))]


class TunedTail(nn.Module):
    """Stages ``first``.. of a backbone, copied (their weights replaced by tuned ones where given), then flattened."""

    def __init__(self, backbone: Backbone, first: int, flatten: bool) -> None:
        super().__init__()
        self.first = first
        self.body = nn.Sequential(*(copy.deepcopy(stage) for stage in backbone.stages[first:]))
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out.flatten(1) if self.flatten else out

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """The tuned weights as task-state tensors, named by the stage they belong to."""
        return {
            f"{TUNED_PREFIX}{self.first + int(name.split('.')[0])}.{name.split('.', 1)[1]}": tensor.detach().clone()
            for name, tensor in self.body.state_dict().items()
        }

    def load_tuned(self, state: dict[str, torch.Tensor]) -> TunedTail:
        names = {}
        for key, tensor in state.items():
            stage, _, name = key[len(TUNED_PREFIX) :].partition(".")
            names[f"{int(stage) - self.first}.{name}"] = tensor
        self.body.load_state_dict(names, strict=True)
        return self


def tuned_first_stage(state: Mapping[str, torch.Tensor]) -> int | None:
    """The first tuned stage of a fine-tuned task state; None for a state that was not fine-tuned."""
    stages = [int(key[len(TUNED_PREFIX) :].split(".")[0]) for key in state if key.startswith(TUNED_PREFIX)]
    return min(stages) if stages else None


def finetuned_state(
    backbone: Backbone,
    transform: Callable[[torch.Tensor], torch.Tensor],
    preprocess: PreprocessConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    n_way: int,
    settings: FineTuneSettings,
) -> dict[str, torch.Tensor]:
    """The tuned stages and the cosine head, trained on ``settings.views`` views of the support ``x``, ``y``.

    ``transform``: the method's features of the backbone's output, [B, D] (ProtoNet's SimpleShot norm,
    Relation's flattened maps, Siamese's h(x)).
    Runs on the backbone's device with autograd on, whatever the caller's mode; ``backbone`` is read only.
    """
    tuning = TailTuning(backbone, first_tuned_stage(backbone, settings.stages), transform, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    views = random_views(x.cpu(), preprocess, settings.views, settings.flips, generator).to(x.device)
    with torch.no_grad():
        chunk = backbone.inference_chunk
        prefix = torch.cat([backbone.run_stages(part, 0, tuning.first) for part in torch.split(views, chunk)])
    prefix = prefix.view(len(x), settings.views, *prefix.shape[1:])  # [image, view, ...]
    steps = settings.steps
    held = held_out_examples(y, n_way, settings.holdout)
    if held is not None:
        steps = tuning.best_step_count(prefix, y, n_way, held)
        if steps == 0:  # the held-out examples said tuning does not help: the untuned task
            return {}
    tail, head = tuning.train(prefix, y, n_way, steps)
    state = {**tail.tuned_state(), HEAD: head.detach().clone(), SCALE: torch.tensor(settings.scale)}
    if settings.untuned_weight > 0:  # a state without it (all before it) predicts with the tuned head alone
        state[UNTUNED_WEIGHT] = torch.tensor(settings.untuned_weight)
    return state


def held_out_examples(y: torch.Tensor, n_way: int, holdout: int) -> torch.Tensor | None:
    """A mask of the last ``holdout`` support examples of each class, or None where a class would keep fewer
    than :data:`MIN_TRAINING_SHOTS` (or ``holdout`` is 0)."""
    if holdout == 0 or int(torch.bincount(y, minlength=n_way).min()) < holdout + MIN_TRAINING_SHOTS:
        return None
    held = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    for c in range(n_way):
        held[(y == c).nonzero().flatten()[-holdout:]] = True
    return held


@dataclass(frozen=True)
class TailTuning:
    """What one fine-tuning trains: copies of ``backbone``'s stages from ``first`` on, and a cosine head on
    their ``transform``-ed outputs, by ``settings``."""

    backbone: Backbone
    first: int
    transform: Callable[[torch.Tensor], torch.Tensor]
    settings: FineTuneSettings

    def train(
        self,
        prefix: torch.Tensor,
        y: torch.Tensor,
        n_way: int,
        steps: int,
        before_each_step: Callable[[TunedTail, torch.Tensor], None] | None = None,
    ) -> tuple[TunedTail, nn.Parameter]:
        """The tail and head after ``steps`` full-batch Adam steps on ``prefix`` [image, view, ...] (the prefix's
        outputs for every view of each image), labelled ``y`` [image].

        ``before_each_step(tail, head)`` is called before each step and after the last (``steps + 1`` calls).
        """
        settings = self.settings
        tail = TunedTail(self.backbone, self.first, self.backbone.flatten).to(prefix.device).eval()
        labels = y.repeat_interleave(prefix.shape[1])
        every_view = prefix.flatten(0, 1)
        with torch.enable_grad():
            tail.requires_grad_(True)
            with torch.no_grad():
                prototypes = class_means(self.transform(tail(prefix[:, 0])), y, n_way)
            head = nn.Parameter(F.normalize(prototypes, dim=1))
            groups = [
                {"params": list(tail.parameters()), "lr": settings.lr},
                {"params": [head], "lr": settings.head_lr},
            ]
            # on CUDA one fused kernel updates every tensor of a step (the steps are small: launches would dominate)
            fused = prefix.device.type == "cuda"
            optimizer = torch.optim.Adam(groups, fused=True) if fused else torch.optim.Adam(groups)
            for _ in range(steps):
                if before_each_step is not None:
                    before_each_step(tail, head)
                optimizer.zero_grad(set_to_none=True)
                logits = cosine_logits(self.transform(tail(every_view)), head, settings.scale)
                F.cross_entropy(logits, labels).backward()
                optimizer.step()
            if before_each_step is not None:
                before_each_step(tail, head)
        return tail, head

    def best_step_count(self, prefix: torch.Tensor, y: torch.Tensor, n_way: int, held: torch.Tensor) -> int:
        """The step count, 0 to ``settings.steps``, with the least cross-entropy on the ``held`` examples (their
        own image, not a random view) when training on the others; the earliest of equals."""
        losses: list[float] = []
        held_prefix, held_y = prefix[held, 0], y[held]

        def record(tail: TunedTail, head: torch.Tensor) -> None:
            with torch.no_grad():
                logits = cosine_logits(self.transform(tail(held_prefix)), head, self.settings.scale)
                losses.append(float(F.cross_entropy(logits, held_y)))

        self.train(prefix[~held], y[~held], n_way, self.settings.steps, record)
        return min(range(len(losses)), key=losses.__getitem__)


def cosine_logits(features: torch.Tensor, head: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    return scale * F.normalize(features, dim=1) @ F.normalize(head, dim=1).t()


def with_untuned(tuned_logits: torch.Tensor, untuned_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """The tuned head's log-probabilities plus ``weight`` times the untuned task's (``untuned_weight``).

    ``untuned_logits``: logits whose softmax is the untuned task's probabilities.
    """
    return tuned_logits.log_softmax(1) + weight * untuned_logits.log_softmax(1)


def is_finetuned(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a task state holds a tuned tail (else it is the method's own, untuned state)."""
    return tuned_first_stage(state) is not None


def untuned_part(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fine-tuned task state without what fine-tuning added: the untuned task of the same support."""
    added = (HEAD, SCALE, UNTUNED_WEIGHT)
    return {k: v for k, v in state.items() if not k.startswith(TUNED_PREFIX) and k not in added}


def head_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """A fine-tuned task's probabilities: its logits are a softmax classifier's (the cosine head's), whatever
    rule the method's own logits follow (Relation's and Siamese's normalised sigmoids)."""
    return logits.softmax(dim=-1)


class FineTunedScorer(nn.Module):
    """images -> (logits, novelty) of a fine-tuned task: the shared prefix, then the tuned tail and its head.

    ``untuned`` maps the untuned tail's output (what the backbone returns for the batch) to the untuned
    task's (logits whose softmax is its probabilities, novelty): the novelty is thus measured as an
    untuned task of the same support set measures it, and (where the state holds an ``untuned_weight``)
    those log-probabilities are added to the head's. ``transform`` gives the head's features of a tail's
    output. ``transductive``: the head's rows are refined by the batch (:mod:`.transductive_prototypes`,
    with the state's ``shots``) before they score it, alone.
    """

    def __init__(
        self,
        backbone: Backbone,
        transform: Callable[[torch.Tensor], torch.Tensor],
        untuned: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        state: Mapping[str, torch.Tensor],
        transductive: bool = False,
    ) -> None:
        super().__init__()
        first = tuned_first_stage(state)
        assert first is not None, "not a fine-tuned task state"
        self.backbone = backbone
        self.first = first
        self.tail = TunedTail(backbone, first, backbone.flatten)
        self.tail.load_tuned({k: v for k, v in state.items() if k.startswith(TUNED_PREFIX)})
        self.tail.eval().requires_grad_(False)
        self.transform = transform
        self.untuned = untuned
        self.transductive = transductive
        self.register_buffer("head", F.normalize(state[HEAD], dim=1))
        if "shots" in state:  # the transductive refinement weighs each row by its class's shots
            self.register_buffer("shots", state["shots"])
        self.scale = float(state[SCALE])
        self.untuned_weight = float(state.get(UNTUNED_WEIGHT, 0.0))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the head's features of the tuned tail, the untuned tail's output), in chunks of the backbone's
        ``inference_chunk`` (a trace sees one)."""
        chunk = self.backbone.inference_chunk
        if is_tracing() or len(x) <= chunk:
            shared = self.backbone.run_stages(x, 0, self.first)
            untuned = self.backbone.run_stages(shared, self.first, len(self.backbone.stages))
            untuned = untuned.flatten(1) if self.backbone.flatten else untuned
            return self.transform(self.tail(shared)), untuned
        parts = [self.outputs(part) for part in torch.split(x, chunk)]
        return torch.cat([tuned for tuned, _ in parts]), torch.cat([untuned for _, untuned in parts])

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tuned, untuned) features, both through ``transform`` (the readouts of the fine-tuning benchmarks)."""
        tuned, untuned = self.outputs(x)
        return tuned, self.transform(untuned)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tuned, untuned = self.outputs(x)
        untuned_logits, novelty = self.untuned(untuned)
        if self.transductive:
            rows, centred = refine(self.head, self.shots, F.normalize(tuned, dim=1))
            return cosine_logits(centred, rows, self.scale), novelty
        logits = cosine_logits(tuned, self.head, self.scale)
        if self.untuned_weight > 0:
            logits = with_untuned(logits, untuned_logits, self.untuned_weight)
        return logits, novelty
