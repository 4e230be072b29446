"""The CLI parses, calls the library and prints: its defaults are the config models', and it never writes into
the installed package."""

import typer.main
from cli_support import assert_clean_error, run

from fewshot_sdk.cli.app import app
from fewshot_sdk.errors import InputError
from fewshot_sdk.registry import ZOO_DIR
from fewshot_sdk.train import protocols, recipes
from fewshot_sdk.train.loop import TrainConfig
from fewshot_sdk.train.protocols import EvaluationConfig

#: Options named otherwise than the config field they set.
RENAMED = {
    "val_within_alphabet": "val_within_group",
    "within_alphabet": "within_group",
    "queries": "q_queries",
    "domain": "domains",
}


def option_defaults(command: str) -> dict[str, object]:
    """Each option's default as the parser fills it in."""
    (found,) = [c for c in typer.main.get_command(app).commands.values() if c.name == command]
    context = found.context_class(found)
    return {p.name: p.get_default(context, call=True) for p in found.params}


def test_no_training_option_has_a_default_of_its_own():
    defaults = {RENAMED.get(name, name): value for name, value in option_defaults("train").items()}
    backed = {name: value for name, value in defaults.items() if name in TrainConfig.model_fields}
    assert len(backed) == 16  # every TrainConfig field the CLI exposes
    assert set(backed.values()) == {None}  # left out: TrainConfig's (a plain run below trains with TrainConfig())


def test_no_evaluation_option_has_a_default_of_its_own():
    defaults = {RENAMED.get(name, name): value for name, value in option_defaults("evaluate").items()}
    backed = {name: value for name, value in defaults.items() if name in EvaluationConfig.model_fields}
    assert set(backed) == set(EvaluationConfig.model_fields)
    assert set(backed.values()) == {None}


def test_a_plain_train_command_trains_with_the_training_config(tmp_path, minimal_omniglot_dir, monkeypatch):
    seen = {}

    def capture(learner, data, config, **kwargs):
        seen["config"] = config
        raise InputError("captured")  # stop before any episode

    monkeypatch.setattr(recipes, "train_on_dataset", capture)
    out = tmp_path / "out"
    assert_clean_error(run("train", "--out", out, "--data", minimal_omniglot_dir), "captured")
    assert seen["config"] == TrainConfig() and not out.exists()
    assert seen["config"].k_shot == 1  # the shipped Omniglot models were trained 1-shot: the config says so too


def test_a_plain_evaluate_command_evaluates_with_the_evaluation_config(checkpoint, minimal_omniglot_dir, monkeypatch):
    seen = {}

    def capture(learner, protocol, config, *args, **kwargs):
        seen["protocol"], seen["config"] = protocol, config
        raise InputError("captured")

    monkeypatch.setattr(protocols, "run_protocol", capture)
    assert_clean_error(run("evaluate", "--model", checkpoint, "--data", minimal_omniglot_dir), "captured")
    assert seen["config"] == EvaluationConfig() and seen["protocol"].settings == ((5, 1),)
    assert_clean_error(
        run("evaluate", "--model", checkpoint, "--data", minimal_omniglot_dir, "--split", "train"), "split"
    )


def test_record_refuses_a_bundled_model_before_evaluating_and_leaves_it_untouched(omniglot_dir):
    config = ZOO_DIR / "protonet-omniglot" / "config.json"
    before = config.read_bytes()
    runs = omniglot_dir / "all_runs.zip"
    for model in ("protonet-omniglot", ZOO_DIR / "protonet-omniglot"):
        result = run("evaluate", "--model", model, "--lake-runs", runs, "--record")
        assert_clean_error(result, "save a copy first")
        assert result.output.count("error:") == 1 and "Lake's" not in result.output
    assert config.read_bytes() == before


def test_record_writes_into_a_checkpoint_folder_of_the_users(checkpoint, omniglot_dir):
    import fewshot_sdk as fs

    result = run("evaluate", "--model", checkpoint, "--lake-runs", omniglot_dir / "all_runs.zip", "--record")
    assert result.exit_code == 0, result.output
    assert fs.load(checkpoint).provenance.lake_runs.test_images == 400
