"""Which evaluation a dataset gets, run on a learner and recorded in its provenance.

The protocol follows from the data, so that the command line, a script and a benchmark report the same figures
for the same folder:

- a full Omniglot folder (background and evaluation sets), test split: the papers' protocol, 5- and 20-way, 1- and
  5-shot episodes of the evaluation alphabets, plus Lake's 20 one-shot runs from the folder's ``all_runs.zip``;
- any other class data (class folders, the minimal Omniglot split, ``split="val"``): the ways and shots asked for,
  5-way 1-shot when none are, on the held-out classes;
- MAML's sinusoid family: the K-shot MSE after 1, 5 and 10 adaptation steps;
- cross-domain (``domains``): each class-per-folder domain evaluated on all its classes, 5-way (or the domain's
  class count where it has fewer), 1- and 5-shot, each domain reported and then the mean over the domains for
  each shot, its interval sqrt(sum of squared intervals) / domains (the domains' episodes are independent).

Ways and shots given explicitly always win over the protocol's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fewshot_sdk.config import AccuracyResult, LakeRunsResult, StrictModel
from fewshot_sdk.data.folders import scan_class_folders
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.data.omniglot import LAKE_RUNS_ZIP, has_full_set, load_lake_runs
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.train.distributed import Ranks
from fewshot_sdk.train.evaluate import evaluate_episodes, evaluate_lake_runs
from fewshot_sdk.train.recipes import FULL_OMNIGLOT_TEST, dataset_splits
from fewshot_sdk.train.regression import evaluate_sinusoid, is_sinusoid

#: Episode settings when none are asked for: the field's headline 5-way 1-shot.
PLAIN_WAYS, PLAIN_SHOTS = (5,), (1,)
#: The papers' Omniglot grid (Vinyals et al. 2016 onwards).
PAPERS_WAYS, PAPERS_SHOTS = (5, 20), (1, 5)
#: The cross-domain grid (BSCD-FSL's shots; 5-way, fewer where a domain has fewer classes).
DOMAIN_WAYS, DOMAIN_SHOTS = (5,), (1, 5)
#: The ``split`` of a figure measured on a whole domain (every class of it held out).
DOMAIN_SPLIT = "domain"
#: MAML's sinusoid report: K points, MSE after each number of steps (Finn et al. 2017, fig. 2).
SINUSOID_SHOTS, SINUSOID_STEPS = (5,), (1, 5, 10)

#: ``progress(label, total)``: a context around one setting's episodes; its value is told the episodes done.
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
#: Told each figure as it is measured: an :class:`AccuracyResult`, the Lake runs, or the sinusoid MSE by label.
ResultCallback = Callable[[AccuracyResult | LakeRunsResult | dict[str, dict[str, float]]], None]


class EvaluationConfig(StrictModel):
    """What an evaluation asks for beyond the data; the fields left ``None`` are the protocol's to choose."""

    n_way: list[int] | None = Field(None, description="ways of the episodes; None: the protocol's")
    k_shot: list[int] | None = Field(None, description="shots of the episodes (K points for sinusoids)")
    q_queries: int = Field(15, ge=1, description="queries per class")
    episodes: int = Field(600, ge=1, description="episodes per setting (tasks, for the sinusoids)")
    seed: int = 0
    split: Literal["test", "val"] = "test"
    split_seed: int | None = Field(None, description="class split; None: the one the learner was trained on")
    lake_runs: Path | None = Field(None, description="Lake's all_runs.zip; the papers' protocol finds its own")
    within_group: bool = Field(False, description="each episode's classes from one group (an Omniglot alphabet)")
    domains: list[Path] = Field(
        default_factory=list, description="class-per-folder domains, each on all its classes, reported with their mean"
    )
    transductive: bool = Field(False, description="score each episode's queries together (predict's transductive)")
    finetune: Literal["auto"] | None = Field(None, description='"auto": fine-tune each task (adapt\'s finetune)')

    def adapt_options(self) -> dict[str, object]:
        """``adapt``'s options every episode's task is adapted with."""
        return {"finetune": self.finetune} if self.finetune is not None else {}


@dataclass(frozen=True)
class Protocol:
    """One evaluation decided from the data: the episode grid, the held-out set's name, Lake's runs, regression."""

    settings: tuple[tuple[int, int], ...]  # (n_way, k_shot) episode settings, in the order they run
    data: Path | None  # the class data the episodes are drawn from (None: no episodes)
    dataset_name: str | None  # recorded with each figure, e.g. "omniglot-evaluation"
    lake_runs: Path | None
    sinusoid_shots: tuple[int, ...] = ()
    domains: tuple[Path, ...] = ()
    domain_settings: tuple[tuple[int, int], ...] = ()  # (n_way at most, k_shot) for each domain


def choose_protocol(data: str | Path | None, config: EvaluationConfig) -> Protocol:
    """The evaluation ``data`` gets (see the module's docstring), before any image is read."""
    if config.domains:
        for domain in config.domains:
            scan_class_folders(domain)  # a missing or empty domain is refused before any other evaluation runs
        domains = tuple(Path(domain) for domain in config.domains)
        grid = grid_of(config.n_way or DOMAIN_WAYS, config.k_shot or DOMAIN_SHOTS)
        within = choose_protocol(data, config.model_copy(update={"domains": []})) if data or config.lake_runs else None
        base = within or Protocol((), None, None, None)
        return replace(base, domains=domains, domain_settings=grid)
    if data is None and config.lake_runs is None:
        raise InputError(
            "give --data (held-out classes for N-way K-shot episodes), --domain (whole class-per-folder domains) "
            "and/or --lake-runs"
        )
    if is_sinusoid(data):
        shots = tuple(config.k_shot or SINUSOID_SHOTS)
        return Protocol((), None, None, config.lake_runs, sinusoid_shots=shots)
    if data is None:
        return Protocol((), None, None, config.lake_runs)
    data = Path(data)
    if config.split == "test" and has_full_set(data):  # the papers' protocol
        found = data / LAKE_RUNS_ZIP
        lake_runs = config.lake_runs or (found if found.is_file() else None)
        grid = grid_of(config.n_way or PAPERS_WAYS, config.k_shot or PAPERS_SHOTS)
        return Protocol(grid, data, FULL_OMNIGLOT_TEST, lake_runs)
    return Protocol(grid_of(config.n_way or PLAIN_WAYS, config.k_shot or PLAIN_SHOTS), data, None, config.lake_runs)


def grid_of(ways: tuple[int, ...] | list[int], shots: tuple[int, ...] | list[int]) -> tuple[tuple[int, int], ...]:
    return tuple((n_way, k_shot) for n_way in ways for k_shot in shots)


@dataclass
class Evaluation:
    """Every figure one protocol measured."""

    episodes: list[AccuracyResult] = field(default_factory=list)
    sinusoid_mse: dict[str, dict[str, float]] | None = None
    lake_runs: LakeRunsResult | None = None
    domain_means: list[AccuracyResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The figures as ``fewshot evaluate --json`` prints them (absent kinds left out)."""
        payload: dict[str, Any] = {"episodes": [result.model_dump() for result in self.episodes]}
        if self.domain_means:
            payload["domain_means"] = [result.model_dump() for result in self.domain_means]
        if self.sinusoid_mse is not None:
            payload["sinusoid_mse"] = self.sinusoid_mse
        if self.lake_runs is not None:
            payload["lake_runs"] = self.lake_runs.model_dump()
        return payload


def run_protocol(
    learner: Learner,
    protocol: Protocol,
    config: EvaluationConfig,
    ranks: Ranks | None = None,
    progress: ProgressFactory | None = None,
    on_result: ResultCallback | None = None,
) -> Evaluation:
    """Measure every figure of ``protocol`` and record each in ``learner.provenance``.

    The episodes are sharded over ``ranks`` (every rank returns the same figures); the sinusoid tasks and Lake's runs
    are cheap and run on rank 0 alone, whose :class:`Evaluation` is then the complete one. Recording replaces an
    earlier figure of the same protocol, so evaluating twice never lists a setting twice.
    """
    ranks = ranks or Ranks()
    on_result = on_result or (lambda result: None)
    evaluation = Evaluation()
    if protocol.sinusoid_shots and ranks.is_main:
        mse: dict[str, dict[str, float]] = {}
        for shots in protocol.sinusoid_shots:
            mse.update(evaluate_sinusoid(learner, shots, SINUSOID_STEPS, tasks=config.episodes, seed=config.seed))
        evaluation.sinusoid_mse = mse
        if learner.provenance.training is not None:
            learner.provenance.training.extra["sinusoid_mse"] = mse
        on_result(mse)

    def episodes_of(
        dataset: LabelledImages, n_way: int, k_shot: int, name: str | None, split: str = config.split
    ) -> AccuracyResult:
        label = f"{name} {n_way}-way {k_shot}-shot" if split == DOMAIN_SPLIT else f"{n_way}-way {k_shot}-shot"
        shown = progress(label, config.episodes) if progress is not None else nullcontext(lambda done: None)
        with shown as advance:
            result = evaluate_episodes(
                learner,
                dataset,
                n_way,
                k_shot,
                config.q_queries,
                config.episodes,
                config.seed,
                split,
                on_episode=lambda index: advance(index + 1),
                within_group=config.within_group,
                dataset_name=name,
                ranks=ranks,
                transductive=config.transductive,
                options=config.adapt_options(),
            )
        learner.provenance.record(result)
        evaluation.episodes.append(result)
        on_result(result)
        return result

    if protocol.data is not None:
        held_out = getattr(dataset_splits(protocol.data, learner, config.split_seed), config.split)
        for n_way, k_shot in protocol.settings:
            episodes_of(held_out, n_way, k_shot, protocol.dataset_name)
    per_setting: dict[tuple[int, int], list[AccuracyResult]] = {}
    for domain in protocol.domains:
        dataset = LabelledImages.from_mapping(scan_class_folders(domain), learner.preprocessor)
        for n_way, k_shot in protocol.domain_settings:
            ways = min(n_way, dataset.num_classes)
            result = episodes_of(dataset, ways, k_shot, domain.name, DOMAIN_SPLIT)
            per_setting.setdefault((n_way, k_shot), []).append(result)
    for (n_way, k_shot), results in per_setting.items():
        mean = domain_mean(results, n_way, k_shot)
        evaluation.domain_means.append(mean)
        on_result(mean)
    if protocol.lake_runs is not None and ranks.is_main:
        options = config.adapt_options()
        lake = evaluate_lake_runs(learner, load_lake_runs(protocol.lake_runs), config.transductive, options)
        if not (config.transductive or options):  # the model card's one Lake figure is the plain protocol's
            learner.provenance.lake_runs = lake
        evaluation.lake_runs = lake
        on_result(lake)
    return evaluation


def domain_mean(results: list[AccuracyResult], n_way: int, k_shot: int) -> AccuracyResult:
    """The mean over domains of one setting, its 95% interval that of a mean of independent estimates.

    A domain with fewer classes than ``n_way`` ran with all of them, and its name says so (``chest (3-way)``).
    """
    accuracy = sum(r.accuracy for r in results) / len(results)
    ci95 = math.sqrt(sum(r.ci95**2 for r in results)) / len(results)
    first = results[0]
    return first.model_copy(
        update={
            "n_way": n_way,
            "k_shot": k_shot,
            "accuracy": accuracy,
            "ci95": ci95,
            "dataset": "mean of "
            + ", ".join((r.dataset or "?") + (f" ({r.n_way}-way)" if r.n_way != n_way else "") for r in results),
        }
    )
