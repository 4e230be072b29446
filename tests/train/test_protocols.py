"""The evaluation protocol follows from the data; figures are recorded, never into the installed package."""

from contextlib import contextmanager

import pytest
import torch

import fewshot_sdk as fs
from fewshot_sdk.config import AccuracyResult
from fewshot_sdk.errors import InputError
from fewshot_sdk.registry import ZOO_DIR
from fewshot_sdk.train.protocols import EvaluationConfig, choose_protocol, run_protocol
from fewshot_sdk.train.recording import record_folder, record_results


def test_full_omniglot_gets_the_papers_grid_and_lakes_runs_from_the_folder(omniglot_dir):
    protocol = choose_protocol(omniglot_dir, EvaluationConfig())
    assert protocol.settings == ((5, 1), (5, 5), (20, 1), (20, 5))
    assert protocol.dataset_name == "omniglot-evaluation" and protocol.data == omniglot_dir
    assert protocol.lake_runs == omniglot_dir / "all_runs.zip"
    asked = choose_protocol(omniglot_dir, EvaluationConfig(n_way=[20], k_shot=[1]))
    assert asked.settings == ((20, 1),) and asked.dataset_name == "omniglot-evaluation"


def test_validation_characters_and_other_data_get_the_ways_and_shots_asked_for(omniglot_dir, minimal_omniglot_dir):
    val = choose_protocol(omniglot_dir, EvaluationConfig(split="val"))
    assert val.settings == ((5, 1),) and val.dataset_name is None and val.lake_runs is None
    minimal = choose_protocol(minimal_omniglot_dir, EvaluationConfig(n_way=[5, 10], k_shot=[1]))
    assert minimal.settings == ((5, 1), (10, 1)) and minimal.dataset_name is None and minimal.lake_runs is None


def test_sinusoids_get_the_mse_protocol_and_nothing_to_evaluate_on_is_refused(tmp_path):
    sinusoid = choose_protocol("sinusoid", EvaluationConfig())
    assert sinusoid.sinusoid_shots == (5,) and sinusoid.settings == () and sinusoid.data is None
    assert choose_protocol("sinusoid", EvaluationConfig(k_shot=[10])).sinusoid_shots == (10,)
    lake_only = choose_protocol(None, EvaluationConfig(lake_runs=tmp_path / "all_runs.zip"))
    assert lake_only.settings == () and lake_only.lake_runs == tmp_path / "all_runs.zip"
    with pytest.raises(InputError, match="--lake-runs"):
        choose_protocol(None, EvaluationConfig())


def test_run_protocol_records_every_figure_in_the_learners_provenance(minimal_omniglot_dir):
    torch.manual_seed(0)
    learner = fs.create("protonet", backbone={"hidden": 8})
    config = EvaluationConfig(n_way=[5], k_shot=[1, 2], q_queries=2, episodes=3)
    shown, progressed = [], []

    @contextmanager
    def progress(label, total):
        yield lambda done: progressed.append((label, done, total))

    evaluation = run_protocol(
        learner, choose_protocol(minimal_omniglot_dir, config), config, progress=progress, on_result=shown.append
    )
    assert [(r.n_way, r.k_shot, r.episodes, r.q_queries) for r in evaluation.episodes] == [(5, 1, 3, 2), (5, 2, 3, 2)]
    assert shown == evaluation.episodes and learner.provenance.results == evaluation.episodes
    assert progressed[-1] == ("5-way 2-shot", 3, 3)
    payload = evaluation.as_json()
    assert set(payload) == {"episodes"} and payload["episodes"][0]["k_shot"] == 1


def test_a_bundled_model_is_never_a_place_to_record(tmp_path):
    with pytest.raises(InputError, match="bundled model.*save a copy first"):
        record_folder("protonet-omniglot")
    with pytest.raises(InputError, match="save a copy first"):
        record_folder(ZOO_DIR / "protonet-omniglot")  # named by its path inside the package, too
    with pytest.raises(InputError, match="no checkpoint folder"):
        record_folder(tmp_path / "absent")


def test_results_are_recorded_into_a_checkpoint_folder_of_the_users(tmp_path, monkeypatch):
    torch.manual_seed(0)
    learner = fs.create("protonet", backbone={"hidden": 8})
    own = learner.save(tmp_path / "protonet-omniglot")  # a folder of the user's named like a bundled model
    monkeypatch.chdir(tmp_path)
    assert record_folder("protonet-omniglot") == own.relative_to(tmp_path)  # resolved as fs.load resolves it
    result = AccuracyResult(n_way=5, k_shot=1, q_queries=15, episodes=4, accuracy=0.5, ci95=0.1)
    learner.provenance.record(result)
    record_results(learner, own)
    assert fs.load(own).provenance.results == [result]


@pytest.fixture()
def two_domains(tmp_path, examples_dir):
    """Two class-per-folder domains of handwritten characters: three classes and two."""
    import shutil

    classes = sorted((examples_dir / "support").iterdir())
    for name, chosen in (("three", classes), ("two", classes[:2])):
        for folder in chosen:
            shutil.copytree(folder, tmp_path / name / folder.name)
    return tmp_path / "three", tmp_path / "two"


def test_domains_are_evaluated_whole_each_reported_then_their_mean(two_domains):
    learner = fs.load("protonet-omniglot")
    shipped = len(learner.provenance.results)
    config = EvaluationConfig(domains=list(two_domains), k_shot=[1], q_queries=2, episodes=4)
    protocol = choose_protocol(None, config)
    assert protocol.domains == two_domains and protocol.domain_settings == ((5, 1),) and protocol.data is None
    evaluation = run_protocol(learner, protocol, config)
    assert [(r.dataset, r.n_way, r.split) for r in evaluation.episodes] == [
        ("three", 3, "domain"),
        ("two", 2, "domain"),
    ]
    (mean,) = evaluation.domain_means
    three, two = evaluation.episodes
    assert mean.dataset == "mean of three (3-way), two (2-way)" and mean.k_shot == 1
    assert mean.accuracy == pytest.approx((three.accuracy + two.accuracy) / 2)
    assert mean.ci95 == pytest.approx((three.ci95**2 + two.ci95**2) ** 0.5 / 2)
    assert evaluation.as_json()["domain_means"][0]["dataset"] == "mean of three (3-way), two (2-way)"
    transductive = run_protocol(learner, protocol, config.model_copy(update={"transductive": True}))
    assert all(r.transductive for r in transductive.episodes)
    assert len(learner.provenance.results) == shipped + 4  # inductive and transductive figures are kept apart


def test_a_missing_domain_is_refused_before_anything_runs(tmp_path, two_domains):
    with pytest.raises(InputError, match="nowhere"):
        choose_protocol(None, EvaluationConfig(domains=[two_domains[0], tmp_path / "nowhere"]))
