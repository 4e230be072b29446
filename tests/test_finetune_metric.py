"""Test-time fine-tuning of Matching (with and without FCE), Relation and Siamese Networks.

The same tuning as ProtoNet's (``tests/test_finetune.py``): the learner never changes, the task holds the tuned
tail, predicts with the cosine head's softmax (whatever the method's own probability rule), keeps the untuned
task's novelty, and saves, reloads and exports like any other task.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_support import assert_clean_error, run
from method_support import leaves_unchanged

import fewshot_sdk as fs
from fewshot_sdk.methods.finetuning import TUNED_PREFIX
from fewshot_sdk.serve.app import fine_tunes

QUICK = {"stages": 1, "steps": 3, "views": 2}
METHODS = ["matching", "matching-fce", "relation", "siamese"]
#: The untuned task state each method keeps beside the tuned tail (its novelty is measured against it).
UNTUNED_KEYS = {
    "matching": {"support", "support_classes"},
    "matching-fce": {"support", "support_classes"},
    "relation": {"class_maps"},
    "siamese": {"support", "support_classes"},
}


@pytest.fixture(scope="module")
def glyphs(examples_dir):
    """The support set (three characters, five glyphs each), the three queries, and all eighteen glyphs."""
    support = fs.SupportSet.from_folder(examples_dir / "support")
    queries = sorted((examples_dir / "queries").iterdir())
    return support, queries, [*queries, *sorted((examples_dir / "support").glob("*/*.png"))]


@pytest.fixture(scope="module", params=METHODS)
def bundled(request):
    """The bundled Omniglot model of each method (frozen, as ``fs.load`` returns it)."""
    return fs.load(f"{request.param}-omniglot")


def test_the_learner_is_bitwise_unchanged_and_the_task_holds_the_tuned_tail(bundled, glyphs):
    learner = bundled
    with leaves_unchanged(learner):
        task = learner.adapt(glyphs[0], finetune=QUICK)
    assert any(k.startswith(TUNED_PREFIX) for k in task.state)
    assert {"head", "scale"} | UNTUNED_KEYS[learner.method] <= set(task.state)
    assert task.state["head"].shape[0] == 3  # one cosine row a class
    batch = task.as_batch(glyphs[2])
    logits, probs, _ = task.network.run(batch, 64)
    with torch.no_grad():  # the learner scores a fine-tuned state through the same tuned network (evaluation does)
        torch.testing.assert_close(learner.frozen_or_self().score(task.state, batch), logits)
    torch.testing.assert_close(probs, logits.softmax(1))  # the head's softmax, whatever the method's rule


@pytest.mark.parametrize("method", METHODS)
def test_an_untrained_learner_is_left_without_gradients(method, glyphs):
    """A learner that is not frozen adapts on itself: tuning leaves no weight changed and no ``.grad`` on it
    (Siamese's FC layer h sits between the tuned tail and the head)."""
    settings = {"embedding": 16} if method == "siamese" else {}
    learner = fs.create(method, **settings)
    with leaves_unchanged(learner):
        state = learner.adapt_tensors(*glyphs[0].to_tensors(learner.preprocessor), 3, finetune=QUICK)
    assert any(k.startswith(TUNED_PREFIX) for k in state)
    assert all(p.grad is None for p in learner.parameters())


def test_novelty_and_the_reject_threshold_are_the_untuned_tasks(bundled, glyphs):
    tuned = bundled.adapt(glyphs[0], finetune=QUICK)
    plain = bundled.adapt(glyphs[0])
    images = glyphs[2]
    torch.testing.assert_close(tuned.predict(images).novelty, plain.predict(images).novelty)
    assert tuned.novelty_threshold == pytest.approx(plain.novelty_threshold, rel=1e-6)


def test_a_fine_tuned_task_saves_reloads_and_exports_with_parity(bundled, glyphs, tmp_path):
    import onnxruntime

    task = bundled.adapt(glyphs[0], finetune=QUICK)
    images = glyphs[2]
    expected = task.predict(images)
    reloaded = fs.load_task(task.save(tmp_path / "task"))
    again = reloaded.predict(images)
    torch.testing.assert_close(again.probs, expected.probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(again.novelty, expected.novelty, rtol=0, atol=1e-6)
    path = task.export_onnx(tmp_path / "task.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, novelty = session.run(["probs", "novelty"], {"images": task.as_batch(images).numpy()})
    np.testing.assert_allclose(probs, expected.probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(novelty, expected.novelty.numpy(), rtol=1e-4, atol=1e-4)


def test_untuned_weight_adds_the_untuned_tasks_log_probabilities_to_the_heads(bundled, glyphs):
    """probs ∝ p_head * p_untuned ** w (float64 reference), p_untuned by the method's own rule (Relation's and
    Siamese's normalised sigmoids), from the same tuned network (same seed)."""
    images = glyphs[2]
    head_only = bundled.adapt(glyphs[0], finetune=QUICK).predict(images).probs.double()
    untuned = bundled.adapt(glyphs[0]).predict(images).probs.double()
    for weight in (0.5, 2.0):
        task = bundled.adapt(glyphs[0], finetune={**QUICK, "untuned_weight": weight})
        assert float(task.state["untuned_weight"]) == weight
        reference = (head_only.log() + weight * untuned.log()).softmax(1)
        torch.testing.assert_close(task.predict(images).probs.double(), reference, rtol=0, atol=1e-5)


def test_fine_tuning_fits_a_support_of_real_glyphs(bundled, examples_dir):
    """Five glyphs of each of three real characters, tuned for 10 steps: the head's loss on the support's own images
    falls well below the head's loss at its start (the class means of the untuned features)."""
    support = fs.SupportSet.from_folder(examples_dir / "support")
    x, y = support.to_tensors(bundled.preprocessor)
    settings = {"stages": 2, "steps": 10, "views": 2, "lr": 1e-3, "head_lr": 1e-2}
    tuned = bundled.adapt(support, finetune=settings)
    start = bundled.adapt(support, finetune={**settings, "steps": 1, "lr": 1e-9, "head_lr": 1e-9})
    loss = {
        name: float(F.cross_entropy(task.network.run(x, 64)[0], y))
        for name, task in (("tuned", tuned), ("start", start))
    }
    assert loss["tuned"] < 0.7 * loss["start"], loss
    assert (tuned.network.run(x, 64)[0].argmax(1) == y).all()


def test_a_fine_tuned_task_changes_classes_by_fine_tuning_again(glyphs, examples_dir):
    learner = fs.load("relation-omniglot")
    folders = {folder.name: sorted(folder.iterdir()) for folder in sorted((examples_dir / "support").iterdir())}
    names = list(folders)
    task = learner.adapt(fs.SupportSet.from_mapping({name: folders[name] for name in names[:-1]}), finetune=QUICK)
    grown = task.add_classes({names[-1]: folders[names[-1]]})
    whole = learner.adapt(fs.SupportSet.from_mapping(folders), finetune=QUICK)
    assert list(grown.class_names) == names
    for name, tensor in whole.state.items():
        torch.testing.assert_close(grown.state[name], tensor, rtol=0, atol=0)
    with pytest.raises(fs.InputError, match="depends on the whole support set"):  # FCE: no per-class state at all
        fs.load("matching-fce-omniglot").adapt(glyphs[0], finetune=QUICK).add_classes({"x": folders[names[0]]})


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("finetune", "match"),
    [("bogus", "finetune"), ({"lr": float("inf")}, "lr"), ({"steps": 0}, "steps"), ({"colour": 1}, "colour")],
)
def test_bad_fine_tuning_settings_are_one_line(glyphs, method, finetune, match):
    with pytest.raises(fs.InputError, match=match) as caught:
        fs.load(f"{method}-omniglot").adapt(glyphs[0], finetune=finetune)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{method} adapt options:")


def test_transductive_prediction_stays_refused_on_a_fine_tuned_task(glyphs):
    task = fs.load("siamese-omniglot").adapt(glyphs[0], finetune=QUICK)
    with pytest.raises(fs.InputError, match="has none"):
        task.predict(glyphs[1], transductive=True)


def test_the_cli_and_the_server_offer_fine_tuning_where_the_method_takes_it(examples_dir, tmp_path):
    for name in ("matching-omniglot", "relation-omniglot", "siamese-omniglot", "protonet-omniglot"):
        assert fine_tunes(fs.load(name)), name
    for name in ("mann-omniglot", "maml-omniglot"):
        assert not fine_tunes(fs.load(name)), name
    glyphs = ["--support", examples_dir / "support", "--query", examples_dir / "queries"]
    result = run("classify", "--model", "relation-omniglot", *glyphs, "--finetune", "auto", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["query"].split("/")[-1].startswith(row["class"]) for row in rows] == [True] * 3
    out = tmp_path / "t.onnx"
    exported = run("export", "--model", "matching-omniglot", *glyphs[:2], "--finetune", "auto", "--out", out)
    assert exported.exit_code == 0 and out.is_file(), exported.output
    assert_clean_error(run("classify", "--model", "mann-omniglot", *glyphs, "--finetune", "auto"), "no options")
