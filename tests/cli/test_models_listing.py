"""``fewshot models`` reads names and config.json files without torch; what it lists is what the torch path loads."""

from __future__ import annotations

import json

import pytest
from cli_support import assert_clean_error, run

import fewshot_sdk as fs
from fewshot_sdk.checkpoint import CONFIG_FILE, LearnerConfig, read_json_model
from fewshot_sdk.errors import CheckpointError
from fewshot_sdk.model_card import ModelCard, read_model_card
from fewshot_sdk.registry import SHIPPED_METHODS, ZOO_DIR


def test_the_shipped_method_names_are_the_registered_ones():
    assert sorted(SHIPPED_METHODS) == fs.available()["methods"]


def test_a_model_card_reads_its_fields_as_the_learner_config_does():
    for name, field in ModelCard.model_fields.items():
        full = LearnerConfig.model_fields[name]
        assert field.annotation == full.annotation, name
        assert field.get_default(call_default_factory=True) == full.get_default(call_default_factory=True), name


def test_models_lists_what_the_learner_configs_hold():
    listing = json.loads(run("models", "--json").output)
    assert listing["methods"] == fs.available()["methods"]
    assert [entry["name"] for entry in listing["models"]] == fs.available()["models"]
    for entry in listing["models"]:
        config = read_json_model(ZOO_DIR / entry["name"] / CONFIG_FILE, LearnerConfig)
        card = read_model_card(ZOO_DIR / entry["name"])
        assert card.model_dump() == config.model_dump(include=set(ModelCard.model_fields))
        assert (entry["method"], entry["domain"]) == (config.method, config.domain)
        assert entry["results"] == {f"{r.n_way}w{r.k_shot}s": round(r.accuracy, 4) for r in config.provenance.results}


@pytest.mark.parametrize(
    ("text", "says"), [(None, "is missing"), ("{", "not valid JSON"), ('{"method": "protonet"}', "backbone")]
)
def test_a_broken_config_is_a_checkpoint_error_naming_the_file(tmp_path, text, says):
    if text is not None:
        (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=says) as caught:
        read_model_card(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(caught.value)


def test_a_broken_bundled_config_is_one_line_from_the_cli(tmp_path, monkeypatch):
    (tmp_path / "broken-model").mkdir()
    (tmp_path / "broken-model" / CONFIG_FILE).write_text("{")
    monkeypatch.setattr("fewshot_sdk.registry.ZOO_DIR", tmp_path)
    assert_clean_error(run("models"), "not valid JSON")
