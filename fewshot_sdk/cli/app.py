"""``fewshot``: classify with a bundled model, train, evaluate and list models from the shell."""

from __future__ import annotations

import inspect
import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fewshot_sdk.allocator import keep_freed_memory
from fewshot_sdk.cli.errors import clean_errors, fail
from fewshot_sdk.cli.progress import embedding_progress, progress_bar
from fewshot_sdk.cli.serve import serve

#: The bundled photo model; handwriting models (``protonet-omniglot``, ...) are named with --model.
DEFAULT_MODEL = "protonet-photos"

app = typer.Typer(
    name="fewshot",
    help="Few-shot classification: adapt a meta-learned model to a few examples per class.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


#: ``--finetune`` of the commands that adapt a task on support images (classify, export).
FinetuneOption = Annotated[
    str | None,
    typer.Option(
        "--finetune",
        help="'auto': fine-tune the end of the network on the support photos (seconds, not milliseconds; "
        "better on photos unlike the model's training ones).",
    ),
]


@app.command()
@clean_errors
def classify(
    query: Annotated[
        list[Path] | None, typer.Option("--query", "-q", help="Image file or folder of images to classify.")
    ] = None,
    support: Annotated[
        list[Path] | None,
        typer.Option("--support", "-s", help="A class folder (repeat per class), or one folder of class subfolders."),
    ] = None,
    model: Annotated[str, typer.Option(help="Bundled model name, checkpoint folder or exported .onnx file.")] = (
        DEFAULT_MODEL
    ),
    task: Annotated[
        Path | None, typer.Option("--task", help="A saved task folder (task.save / a previous --save-task).")
    ] = None,
    add_support: Annotated[
        list[Path] | None,
        typer.Option("--add-support", help="Add a class folder (or a folder of class folders) to --task's classes."),
    ] = None,
    remove_class: Annotated[
        list[str] | None, typer.Option("--remove-class", help="Remove a class from --task (repeatable).")
    ] = None,
    save_task: Annotated[
        Path | None, typer.Option("--save-task", help="Write the (grown) task to this folder.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Let --save-task replace a saved task.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Show the k most probable classes.")] = 1,
    reject: Annotated[
        str | None,
        typer.Option(
            "--reject",
            help="Answer 'unknown' for queries unlike every support class: 'auto' (threshold calibrated on the "
            "support set) or a novelty threshold.",
        ),
    ] = None,
    transductive: Annotated[
        bool,
        typer.Option(
            "--transductive",
            help="Let the queries, classified together, correct the prototypes (ProtoNet; better on photos unlike "
            "the training ones, with one or few shots; each answer then depends on the other queries).",
        ),
    ] = False,
    finetune: FinetuneOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Adapt to the support images (or load a saved --task, growing it with --add-support) and classify the queries."""
    from fewshot_sdk.cli.sources import expand_queries, support_from_options  # images: numpy, pillow

    threshold = parse_reject(reject)
    predict_options = {"reject": threshold, "transductive": transductive}
    if task is not None or add_support or remove_class or save_task is not None:
        if finetune:
            fail("--finetune adapts a new task on --support; a saved --task keeps the network it was adapted with")
        classify_with_task(
            query,
            support,
            model,
            task,
            add_support,
            remove_class,
            save_task,
            overwrite,
            top_k,
            predict_options,
            as_json,
        )
        return
    if not query:
        fail("give the images to classify with --query")
    queries = expand_queries(query)
    if model.endswith(".onnx"):
        from fewshot_sdk.export.runtime import OnnxClassifier

        if support:
            fail("an .onnx model already holds its support set: drop --support")
        if transductive:
            fail("an .onnx task scores each query alone: drop --transductive, or give the saved task or its support")
        if finetune:
            fail("an .onnx model holds its network already: drop --finetune")
        classifier = OnnxClassifier(model)
        answer = classifier.classify(queries, reject=threshold)
        answers = Answers(classifier.class_names, answer.class_names, answer.probs, answer.novelty, answer.threshold)
    else:
        import fewshot_sdk as fs
        from fewshot_sdk.task.domain import name_learner

        if not support:
            fail("give the support images with --support (a folder per class, or one folder of class folders)")
        learner = fs.load(model)
        name_learner(learner, model)  # so a warning says "protonet-omniglot is ...", not "this protonet model"
        with one_line_warnings(), embedding_progress(console, quiet=as_json):
            task = learner.adapt(support_from_options(support), **adapt_options(finetune))
            prediction = task.predict(queries, **predict_options)
        answers = Answers.of(prediction)
    print_predictions(queries, answers, top_k, as_json)


def classify_with_task(
    query: list[Path] | None,
    support: list[Path] | None,
    model: str,
    task_folder: Path | None,
    add_support: list[Path] | None,
    remove_class: list[str] | None,
    save_task: Path | None,
    overwrite: bool,
    top_k: int,
    predict_options: dict[str, Any],
    as_json: bool,
) -> None:
    """``classify --task``: a saved task, grown or shrunk by class, saved again, and/or classifying queries."""
    import fewshot_sdk as fs
    from fewshot_sdk.checkpoint import prepare_output_folder
    from fewshot_sdk.cli.sources import expand_queries
    from fewshot_sdk.task.adapted import TASK_FILE, TASK_WEIGHTS

    if task_folder is None:
        fail("--add-support, --remove-class and --save-task change a saved task: give it with --task")
    if support:
        fail("a saved task already holds its support set: drop --support (use --add-support for new classes)")
    if model != DEFAULT_MODEL:
        fail("a saved task holds its model: drop --model")
    if not query and save_task is None:
        fail("give --query images to classify, or --save-task to write the changed task")
    task = fs.load_task(task_folder)
    if save_task is not None:
        with no_empty_folder_left(save_task):
            prepare_output_folder(save_task, overwrite, (TASK_FILE, TASK_WEIGHTS))  # refuse before any work
            task = changed_task(task, add_support, remove_class, as_json)
            task.save(save_task, overwrite=True)  # checked above
        console.print(f"saved the {task.method} task ({task.num_classes} classes) to {save_task}")
    else:
        task = changed_task(task, add_support, remove_class, as_json)
    if query:
        queries = expand_queries(query)
        with one_line_warnings():
            prediction = task.predict(queries, **predict_options)
        print_predictions(queries, Answers.of(prediction), top_k, as_json)


def changed_task(task: Any, add_support: list[Path] | None, remove_class: list[str] | None, quiet: bool) -> Any:
    from fewshot_sdk.cli.sources import classes_to_add

    if remove_class:
        task = task.remove_classes(remove_class)
    if add_support:
        with one_line_warnings(), embedding_progress(console, quiet=quiet):
            task = task.add_classes(classes_to_add(add_support))
    return task


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """The SDK's warnings (photos given to a handwriting model) as one ``warning: ...`` line on stderr.

    Python's own format is ``file:line: DomainWarning: ...`` plus a source line; other libraries' warnings keep it.
    The SDK already says each thing once per model, so its warnings are always shown (Python's once-per-location
    registry would hide a repeat run in the same process).
    """
    from fewshot_sdk.task.domain import DomainWarning

    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, DomainWarning):
                typer.echo(f"warning: {message}", err=True)
            else:
                default(message, category, *args, **kwargs)

        warnings.simplefilter("always", DomainWarning)
        warnings.showwarning = show
        yield


def adapt_options(finetune: str | None) -> dict[str, Any]:
    """``--finetune``: ``auto`` (adapt's ``finetune="auto"``), else a one-line error."""
    if finetune is None:
        return {}
    if finetune != "auto":
        fail(f"--finetune takes 'auto', got {finetune!r}")
    return {"finetune": "auto"}


def parse_reject(reject: str | None) -> float | str | None:
    """``--reject``: ``auto`` or a number, else a one-line error."""
    if reject is None or reject == "auto":
        return reject
    try:
        value = float(reject)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        fail(f"--reject takes 'auto' or a finite number (a novelty threshold), got {reject!r}")
    return value


@dataclass(frozen=True)
class Answers:
    """What ``classify`` prints, from the torch task or an .onnx file alike."""

    classes: list[str]
    chosen: list[str | None]  # None: rejected as none of the classes
    probs: Any  # [B, N] numpy
    novelty: Any = None  # [B] numpy, or None
    threshold: float | None = None

    @classmethod
    def of(cls, prediction: Any) -> Answers:
        novelty = None if prediction.novelty is None else prediction.novelty.numpy()
        return cls(
            list(prediction.classes), prediction.class_names, prediction.probs.numpy(), novelty, prediction.threshold
        )


def print_predictions(queries: list[Path], answers: Answers, top_k: int, as_json: bool) -> None:
    """One line (or JSON object) per query: its class, or ``unknown`` when rejected, and the top k classes."""
    class_names = answers.classes
    k = min(top_k, len(class_names))
    rows = []
    for index, (path, row) in enumerate(zip(queries, answers.probs, strict=True)):
        order = sorted(range(len(class_names)), key=lambda i: -float(row[i]))[:k]
        entry: dict[str, Any] = {
            "query": str(path),
            "class": answers.chosen[index],
            "probability": round(float(row[order[0]]), 6),
            "top_k": [{"class": class_names[i], "probability": round(float(row[i]), 6)} for i in order],
        }
        if answers.novelty is not None:
            entry["novelty"] = round(float(answers.novelty[index]), 6)
        if answers.threshold is not None:
            entry["threshold"] = round(answers.threshold, 6)
        rows.append(entry)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        ranked = ", ".join(f"{entry['class']} ({entry['probability']:.3f})" for entry in row["top_k"])
        if row["class"] is None:
            ranked = f"unknown (novelty {row['novelty']:.3f} > {row['threshold']:.3f}; nearest: {ranked})"
        typer.echo(f"{row['query']}: {ranked}")


@app.command()
@clean_errors
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint folder to write.")],
    data: Annotated[
        Path,
        typer.Option(
            help="Omniglot folder (background set, full or minimal zips), a folder of class subfolders, or sinusoid."
        ),
    ],
    method: Annotated[
        str | None, typer.Option(help="Method name (see `fewshot models`); default protonet, or --init's.")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(help="Continue from this bundled model or checkpoint folder instead of random weights."),
    ] = None,
    # Left out, a training setting takes TrainConfig's default (fewshot_sdk.train.loop): the one source of them.
    episodes: Annotated[int | None, typer.Option(min=1, help="Meta-updates.")] = None,
    n_way: Annotated[int | None, typer.Option("--n-way", min=2, help="Classes per training episode.")] = None,
    k_shot: Annotated[
        int | None, typer.Option("--k-shot", min=1, help="Support examples per class in training.")
    ] = None,
    q_queries: Annotated[int | None, typer.Option("--q-queries", min=1, help="Query examples per class.")] = None,
    meta_batch: Annotated[int | None, typer.Option("--meta-batch", min=1, help="Episodes per meta-update.")] = None,
    lr: Annotated[float | None, typer.Option(help="Outer (meta) learning rate, > 0.")] = None,
    lr_decay_every: Annotated[
        int | None, typer.Option("--lr-decay-every", min=1, help="Episodes between halvings of the learning rate.")
    ] = None,
    val_every: Annotated[int | None, typer.Option("--val-every", min=1, help="Episodes between validations.")] = None,
    val_episodes: Annotated[
        int | None, typer.Option("--val-episodes", min=1, help="Validation episodes (fixed, seeded) per validation.")
    ] = None,
    val_n_way: Annotated[int | None, typer.Option("--val-n-way", min=2, help="Classes per validation episode.")] = None,
    val_k_shot: Annotated[
        int | None, typer.Option("--val-k-shot", min=1, help="Support examples per class in validation.")
    ] = None,
    val_within_alphabet: Annotated[
        bool | None,
        typer.Option(
            "--val-within-alphabet",
            help="Draw each validation episode's classes from one alphabet (Lake's task; class names Alphabet/...).",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the episode sampling and initialisation.")] = None,
    split_seed: Annotated[int | None, typer.Option("--split-seed", help="Class split; default 0, or --init's.")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="conv4, resnet12 or efficientnet-lite0 (ImageNet weights, for photos).")
    ] = None,
    backbone_from: Annotated[
        str | None,
        typer.Option(
            "--backbone-from",
            help="Start a new --method's backbone from this model's (weights and preprocessing), e.g. a MANN "
            "encoder from protonet-omniglot.",
        ),
    ] = None,
    frozen_stages: Annotated[
        int | None,
        typer.Option(
            "--frozen-stages", min=0, help="Keep the first N backbone stages at their starting weights (computed once)."
        ),
    ] = None,
    batchnorm: Annotated[
        str | None,
        typer.Option(help="train, or frozen: keep batch-norm statistics (fine-tuning a pretrained backbone)."),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=8, help="Input resolution of a new model (square).")
    ] = None,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="A method setting as key=value (JSON value), repeatable.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing checkpoint in --out.")] = False,
    nproc_per_node: Annotated[
        int,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Processes (one per GPU, or CPU processes) sharing each meta-batch, via torch.distributed.",
        ),
    ] = 1,
) -> None:
    """Meta-train a method episodically; keeps the weights with the best validation figure (accuracy, or MSE)."""
    from fewshot_sdk.checkpoint import CONFIG_FILE, prepare_output_folder
    from fewshot_sdk.train import distributed
    from fewshot_sdk.train.loop import TrainConfig, resolve_device, seed_everything
    from fewshot_sdk.train.recipes import train_on_dataset
    from fewshot_sdk.train.starting import starting_learner

    options = dict(locals())  # the parsed options, for the processes --nproc-per-node starts
    config = config_from(TrainConfig, "training", options, val_within_group=val_within_alphabet)
    resolve_device(config.device)  # an unknown or absent device fails now, not after loading the data
    if nproc_per_node > 1 and not distributed.launched_by_torchrun():
        distributed.check_world(config.meta_batch, distributed.Ranks(world_size=nproc_per_node))
        with no_empty_folder_left(out):
            prepare_output_folder(out, overwrite, (CONFIG_FILE,))
            in_processes(train, options, nproc_per_node, config.device)
        return
    with distributed.process_group(config.device) as ranks, no_empty_folder_left(out):
        if ranks.is_main:
            prepare_output_folder(out, overwrite, (CONFIG_FILE,))  # fail before hours of training, not after
        settings = parse_settings(setting or [])
        if image_size is not None:
            settings["image_size"] = image_size
        seed_everything(config.seed)  # the initial weights (rank 0's are broadcast to the others)
        learner = starting_learner(data, method, init, backbone, settings, split_seed, backbone_from)
        with progress_bar(console, "training", config.episodes, quiet=not ranks.is_main) as advance:
            result = train_on_dataset(
                learner,
                data,
                config,
                split_seed=split_seed,
                on_progress=advance,
                on_new_best=lambda best: best.save(out, overwrite=True),  # keep the best so far on disk
            )
        if not ranks.is_main:
            return
        learner.save(out, overwrite=True)  # the best weights, now with their full training record
        figure = "MSE" if result.metric == "mse" else result.metric
        console.print(f"best validation {figure} {result.best_value:.4f} at episode {result.best_episode}; saved {out}")


def config_from(config_model: Any, what: str, options: dict[str, Any], **renamed: Any) -> Any:
    """``config_model`` from a command's options named as its fields (``renamed``: those named otherwise); an option
    left out (None) takes the config model's default, the one source of them."""
    from pydantic import ValidationError

    from fewshot_sdk.config import describe_validation_error

    given = {**options, **renamed}
    try:
        return config_model(**{name: given[name] for name in config_model.model_fields if given.get(name) is not None})
    except ValidationError as exc:
        fail(f"invalid {what} settings: {describe_validation_error(exc)}")


def in_processes(command: Any, local_values: dict[str, Any], nproc: int, device: str) -> None:
    """Run a CLI command in ``nproc`` processes (``--nproc-per-node``) with the options already parsed here:
    of the command body's ``locals()``, the command's own parameters."""
    from fewshot_sdk.cli.launch import check_processes, launch

    check_processes(nproc, device)
    options = {name: local_values[name] for name in inspect.signature(command).parameters if name in local_values}
    launch(f"{__name__}:{command.__name__}", options, nproc)


@contextmanager
def no_empty_folder_left(out: Path) -> Iterator[None]:
    """A run that fails before writing anything removes the ``--out`` folder it created."""
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--set takes key=value, got {pair!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


@app.command()
@clean_errors
def evaluate(
    *,
    model: Annotated[str, typer.Option(help="Bundled model name or checkpoint folder.")] = DEFAULT_MODEL,
    data: Annotated[
        Path | None, typer.Option(help="Omniglot folder (full: background + evaluation zips) or class folders.")
    ] = None,
    n_way: Annotated[
        list[int] | None, typer.Option("--n-way", help="Ways (repeatable); default: the data's protocol.")
    ] = None,
    k_shot: Annotated[
        list[int] | None, typer.Option("--k-shot", help="Shots (repeatable); default: the data's protocol.")
    ] = None,
    # Left out, these take EvaluationConfig's defaults (fewshot_sdk.train.protocols): the one source of them.
    queries: Annotated[int | None, typer.Option(min=1, help="Queries per class.")] = None,
    episodes: Annotated[int | None, typer.Option(min=1, help="Episodes per setting.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the episodes.")] = None,
    split: Annotated[str | None, typer.Option(help="test or val characters.")] = None,
    split_seed: Annotated[int | None, typer.Option("--split-seed", help="Default: the checkpoint's.")] = None,
    lake_runs: Annotated[
        Path | None,
        typer.Option(
            "--lake-runs", help="Omniglot all_runs.zip (test only); default: the one in a full --data folder."
        ),
    ] = None,
    within_alphabet: Annotated[
        bool | None,
        typer.Option("--within-alphabet", help="Draw each episode's classes from one alphabet (Lake's task)."),
    ] = None,
    domain: Annotated[
        list[Path] | None,
        typer.Option(
            "--domain",
            help="A class-per-folder domain evaluated on all its classes (repeatable): 5-way (fewer if it has "
            "fewer classes) 1- and 5-shot, each domain and their mean.",
        ),
    ] = None,
    transductive: Annotated[
        bool | None,
        typer.Option("--transductive", help="Score each episode's queries together (predict's transductive=True)."),
    ] = None,
    finetune: Annotated[
        str | None,
        typer.Option("--finetune", help="'auto': fine-tune every episode's task on its support (adapt's finetune)."),
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            help="Write the results into the checkpoint's config.json (a folder of yours, never a bundled model)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON results.")] = False,
    nproc_per_node: Annotated[
        int,
        typer.Option("--nproc-per-node", min=1, help="Processes sharing the episodes (same figures as one process)."),
    ] = 1,
    runtime: Annotated[
        str,
        typer.Option(
            help="torch, or onnxruntime: embed the images with the backbone traced into onnxruntime (CPU; "
            "faster for the photo model)."
        ),
    ] = "torch",
) -> None:
    """Mean accuracy ± 95% CI over seeded N-way K-shot episodes, and/or Lake's 20 one-shot runs.

    On a full Omniglot folder (background and evaluation sets) the default is the papers'
    protocol: 5- and 20-way, 1- and 5-shot episodes of the evaluation characters, and
    Lake's runs from the folder's all_runs.zip.
    """
    import fewshot_sdk as fs
    from fewshot_sdk.train import distributed
    from fewshot_sdk.train.protocols import EvaluationConfig, choose_protocol, run_protocol
    from fewshot_sdk.train.recording import record_folder, record_results

    if record:
        record_folder(model)  # a bundled model is refused before any episode runs
    options = dict(locals())  # the parsed options, for the processes --nproc-per-node starts
    if nproc_per_node > 1 and not distributed.launched_by_torchrun():
        in_processes(evaluate, options, nproc_per_node, "auto")
        return
    # One process of the group: the library shards the episodes; rank 0 prints and records.
    with distributed.process_group("auto") as ranks:
        config = config_from(
            EvaluationConfig, "evaluation", options, q_queries=queries, within_group=within_alphabet, domains=domain
        )
        protocol = choose_protocol(data, config)
        learner = fs.load(model, runtime=runtime)
        quiet = as_json or not ranks.is_main

        @contextmanager
        def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
            with progress_bar(console, label, total, quiet=quiet) as advance:
                yield lambda done: advance(done, {})

        evaluation = run_protocol(learner, protocol, config, ranks, progress, None if quiet else print_result)
        if not ranks.is_main:
            return
        if record:
            record_results(learner, model)
        if as_json:
            typer.echo(json.dumps({"model": model, "method": learner.method, **evaluation.as_json()}, indent=2))


def adapted_how(result: Any) -> str:
    """ ", fine-tuned" and/or ", transductive": how a figure's tasks were adapted and predicted, or nothing."""
    fine_tuned = ", fine-tuned" if result.adapt_options.get("finetune") else ""
    return fine_tuned + (", transductive" if result.transductive else "")


def print_result(result: Any) -> None:
    """One figure of ``fewshot evaluate`` as the line it prints, as soon as it is measured."""
    from fewshot_sdk.config import AccuracyResult, LakeRunsResult
    from fewshot_sdk.train.protocols import DOMAIN_SPLIT

    if isinstance(result, AccuracyResult):
        figure = f"{100 * result.accuracy:.2f} ± {100 * result.ci95:.2f}%"
        where = f"{result.dataset}, " if result.dataset and result.split == DOMAIN_SPLIT else ""
        episodes = f"{result.episodes} episodes{adapted_how(result)}"
        typer.echo(f"{where}{result.n_way}-way {result.k_shot}-shot: {figure} ({episodes})")
    elif isinstance(result, LakeRunsResult):
        correct = f"{100 * result.accuracy:.2f}% correct ({result.correct}/{result.test_images}{adapted_how(result)})"
        typer.echo(f"Lake's {result.runs} runs: {correct}")
    else:  # the sinusoid MSE by label
        for label, figure in result.items():
            typer.echo(f"{label}: MSE {figure['mse']:.3f} ± {figure['ci95']:.3f} ({figure['tasks']} tasks)")


@app.command()
@clean_errors
def models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the methods and the bundled pretrained models with their recorded accuracy."""
    # Names and config.json files only: no torch (fs.available() imports every method to list them).
    from fewshot_sdk.model_card import read_model_card
    from fewshot_sdk.registry import SHIPPED_METHODS, ZOO_DIR, zoo_names

    methods = sorted(SHIPPED_METHODS)
    bundled = []
    for name in zoo_names():
        card = read_model_card(ZOO_DIR / name)
        figures = {f"{r.n_way}w{r.k_shot}s": round(r.accuracy, 4) for r in card.provenance.results}
        bundled.append(
            {
                "name": name,
                "method": card.method,
                "domain": card.domain,
                "input_size": card.input_size,
                "results": figures,
            }
        )
    if as_json:
        typer.echo(json.dumps({"methods": methods, "models": bundled}, indent=2))
        return
    typer.echo("methods: " + ", ".join(methods))
    table = Table(title="bundled models")
    for column in ("name", "method", "domain", "input", "test accuracy"):
        table.add_column(column, overflow="fold")  # narrow terminals: wrap, never cut a name short
    for entry in bundled:
        figures = ", ".join(f"{k} {100 * v:.1f}%" for k, v in entry["results"].items()) or "not measured"
        table.add_row(entry["name"], entry["method"], entry["domain"], entry["input_size"], figures)
    Console().print(table)


@app.command()
@clean_errors
def export(
    out: Annotated[Path, typer.Option(help="The .onnx file to write.")],
    support: Annotated[
        list[Path] | None,
        typer.Option("--support", "-s", help="A class folder (repeat per class), or one folder of class subfolders."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Bundled model name or checkpoint folder; or a saved task folder (then no --support).")
    ] = DEFAULT_MODEL,
    opset: Annotated[int | None, typer.Option(help="ONNX opset to target (default: the exporter's).")] = None,
    quantize: Annotated[
        str | None, typer.Option(help="int8: quantized, calibrated on the support images (default: float32).")
    ] = None,
    finetune: FinetuneOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Adapt to the support images and write the task as one .onnx file that onnxruntime runs alone."""
    import fewshot_sdk as fs
    from fewshot_sdk.cli.sources import support_from_options
    from fewshot_sdk.export.onnx import check_destination
    from fewshot_sdk.task.adapted import TASK_FILE

    check_destination(out, overwrite)  # fail before adapting, not after
    if (Path(model) / TASK_FILE).is_file():
        if support or finetune:
            fail("a saved task already holds its support set and network: drop --support and --finetune")
        task = fs.load_task(model)
    else:
        if not support:
            fail("give the support images with --support (a folder per class, or one folder of class folders)")
        task = fs.load(model).adapt(support_from_options(support), **adapt_options(finetune))
    path = task.export_onnx(out, opset=opset, overwrite=overwrite, quantize=quantize)
    console.print(f"exported the {task.method} task ({task.num_classes} classes) to {path}")


app.command()(serve)


def main() -> None:
    keep_freed_memory()  # this process is ours: keep freed memory for the next call (fewshot_sdk/allocator.py)
    app()
