"""Test-time fine-tuning: the task holds the tuned network; the learner never changes; saves, reloads, exports."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from method_support import leaves_unchanged

import fewshot_sdk as fs
from fewshot_sdk.data.augment import random_views
from fewshot_sdk.methods.finetuning import TUNED_PREFIX, FineTuneSettings

QUICK = {"stages": 1, "steps": 3, "views": 2}


@pytest.fixture(scope="module")
def glyphs(examples_dir):
    return fs.SupportSet.from_folder(examples_dir / "support"), sorted((examples_dir / "queries").iterdir())


def test_views_are_the_image_then_seeded_random_ones_in_the_pixel_range():
    config = fs.load("protonet-photos").preprocess_config
    images = (torch.rand(3, 3, 40, 56) - 0.498) / 0.502
    views = random_views(images, config, 4, flips=False, generator=torch.Generator().manual_seed(1))
    assert views.shape == (12, 3, 40, 56)
    torch.testing.assert_close(views[::4], images)  # view 0 of each image is the image
    again = random_views(images, config, 4, flips=False, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(views, again, rtol=0, atol=0)
    pixels = views * 0.5019607843137255 + 0.4980392156862745
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    assert not torch.allclose(views[1], views[0])


def test_the_learner_is_bitwise_unchanged_and_the_task_holds_the_tuned_tail(glyphs):
    learner = fs.load("protonet-omniglot")
    with leaves_unchanged(learner):
        task = learner.adapt(glyphs[0], finetune=QUICK)
    tuned = [k for k in task.state if k.startswith(TUNED_PREFIX)]
    assert tuned and {"head", "prototypes", "shots", "scale"} <= set(task.state)
    plain = learner.adapt(glyphs[0])
    assert task.predict(glyphs[1]).class_names == plain.predict(glyphs[1]).class_names
    batch = task.as_batch(glyphs[1])
    with torch.no_grad():  # the learner scores a fine-tuned state through the same tuned network (evaluation does)
        torch.testing.assert_close(learner.frozen_or_self().score(task.state, batch), task.network.run(batch, 64)[0])
    torch.testing.assert_close(task.predict(glyphs[1]).novelty, plain.predict(glyphs[1]).novelty)  # untuned novelty


@pytest.mark.parametrize("settings", [QUICK, {**QUICK, "untuned_weight": 1.0}], ids=["head", "ensemble"])
def test_a_fine_tuned_task_saves_reloads_and_exports_with_parity(glyphs, tmp_path, settings):
    import onnxruntime

    task = fs.load("protonet-omniglot").adapt(glyphs[0], finetune=settings)
    expected = task.predict(glyphs[1])
    reloaded = fs.load_task(task.save(tmp_path / "task"))
    torch.testing.assert_close(reloaded.predict(glyphs[1]).probs, expected.probs, rtol=0, atol=1e-6)
    path = task.export_onnx(tmp_path / "task.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = task.as_batch(glyphs[1]).numpy()
    probs = session.run(["probs"], {"images": batch})[0]
    np.testing.assert_allclose(probs, expected.probs.numpy(), atol=1e-4)
    with pytest.raises(fs.InputError, match="fine-tuned on its whole support set"):  # no support images kept
        reloaded.add_classes({"extra": [glyphs[1][0]]})
    with pytest.raises(fs.InputError, match="fine-tuned on its whole support set"):
        reloaded.remove_classes([task.class_names[0]])


def test_untuned_weight_adds_the_untuned_prototypes_log_probabilities_to_the_heads(glyphs):
    """probs ∝ p_head * p_untuned ** w (float64 reference), from the same tuned network (same seed)."""
    learner = fs.load("protonet-omniglot")
    head_only = learner.adapt(glyphs[0], finetune=QUICK).predict(glyphs[1]).probs.double()
    untuned = learner.adapt(glyphs[0]).predict(glyphs[1]).probs.double()
    for weight in (0.5, 2.0):
        task = learner.adapt(glyphs[0], finetune={**QUICK, "untuned_weight": weight})
        assert float(task.state["untuned_weight"]) == weight
        reference = (head_only.log() + weight * untuned.log()).softmax(1)
        torch.testing.assert_close(task.predict(glyphs[1]).probs.double(), reference, rtol=0, atol=1e-5)
    assert "untuned_weight" not in learner.adapt(glyphs[0], finetune=QUICK).state  # 0: the head alone, as before


def test_a_fine_tuned_task_changes_classes_by_fine_tuning_again_on_its_support(examples_dir):
    learner = fs.load("protonet-omniglot")
    folders = {folder.name: sorted(folder.iterdir()) for folder in sorted((examples_dir / "support").iterdir())}
    names = list(folders)
    first, last = names[:-1], names[-1]
    task = learner.adapt(fs.SupportSet.from_mapping({name: folders[name] for name in first}), finetune=QUICK)
    grown = task.add_classes({last: folders[last]})
    whole = learner.adapt(fs.SupportSet.from_mapping(folders), finetune=QUICK)  # the same support, adapted at once
    assert list(grown.class_names) == list(whole.class_names) == names
    assert any(key.startswith(TUNED_PREFIX) for key in grown.state)
    for name, tensor in whole.state.items():
        torch.testing.assert_close(grown.state[name], tensor, rtol=0, atol=0)
    shrunk = grown.remove_classes([last])
    assert list(shrunk.class_names) == first
    for name, tensor in task.state.items():
        torch.testing.assert_close(shrunk.state[name], tensor, rtol=0, atol=0)
    assert list(task.class_names) == first and set(task.state) == set(shrunk.state)  # the grown-from task is unchanged


def test_concurrent_fine_tuning_adapts_equal_the_single_threaded_ones(glyphs):
    learner = fs.load("protonet-omniglot")
    alone = [learner.adapt(glyphs[0], finetune={**QUICK, "seed": seed}).state for seed in range(8)]
    together: list[dict[str, torch.Tensor] | None] = [None] * 8

    def adapt(seed: int) -> None:
        together[seed] = learner.adapt(glyphs[0], finetune={**QUICK, "seed": seed}).state

    threads = [threading.Thread(target=adapt, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for one, other in zip(alone, together, strict=True):
        assert other is not None and set(one) == set(other)
        for name in one:
            torch.testing.assert_close(other[name], one[name], rtol=0, atol=0)
    assert not torch.equal(alone[0]["head"], alone[1]["head"])  # the seed picks the views


def test_fine_tuning_fits_the_support_of_real_photos(examples_dir):
    learner = fs.load("protonet-photos")
    support = fs.SupportSet.from_folder(examples_dir / "photos" / "support")
    settings = {"stages": 1, "steps": 8, "views": 2}
    task = learner.adapt(support, finetune=settings)
    queries = sorted((examples_dir / "photos" / "queries").iterdir())
    assert task.predict(queries).class_names == ["flamingo", "laptop", "panda", "pizza", "starfish"]
    assert task.predict(queries, transductive=True).class_names == ["flamingo", "laptop", "panda", "pizza", "starfish"]
    x, y = support.to_tensors(learner.preprocessor)
    untuned = learner.adapt(support, finetune={**settings, "steps": 1, "lr": 1e-9, "head_lr": 1e-9})
    loss = {
        name: float(torch.nn.functional.cross_entropy(t.network.run(x, 64)[0], y))
        for name, t in (("tuned", task), ("untuned", untuned))
    }
    assert loss["tuned"] < 0.5 * loss["untuned"], loss  # the support is fitted


def test_held_out_support_examples_stop_tuning_that_does_not_generalise(examples_dir):
    """``holdout``: the last example of each class is held out to choose the step count. Real classes are
    tuned; classes that each hold one photo of every kind (nothing in common to learn) stay untuned."""
    learner = fs.load("protonet-photos")
    photos = [sorted(folder.iterdir()) for folder in sorted((examples_dir / "photos" / "support").iterdir())]
    settings = {"stages": 1, "steps": 6, "views": 2, "holdout": 1}
    real = learner.adapt(
        fs.SupportSet.from_mapping({f"class{c}": kind for c, kind in enumerate(photos)}), finetune=settings
    )
    assert any(key.startswith(TUNED_PREFIX) for key in real.state)
    mixed = {f"mix{k}": [kind[k] for kind in photos] for k in range(5)}
    untuned = learner.adapt(fs.SupportSet.from_mapping(mixed), finetune=settings)
    assert not any(key.startswith(TUNED_PREFIX) for key in untuned.state) and "head" not in untuned.state


def test_holdout_is_ignored_where_a_class_would_keep_too_few_examples(glyphs):
    learner = fs.load("protonet-omniglot")
    plain = learner.adapt(glyphs[0], finetune=QUICK)
    held = learner.adapt(glyphs[0], finetune={**QUICK, "holdout": 4})  # 5 glyphs a class: 1 left to train on
    assert set(held.state) == set(plain.state)
    for name, tensor in plain.state.items():
        torch.testing.assert_close(held.state[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("finetune", "match"),
    [("bogus", "finetune"), ({"lr": float("inf")}, "lr"), ({"steps": 0}, "steps"), ({"colour": 1}, "colour")],
)
def test_bad_fine_tuning_settings_are_one_line(glyphs, finetune, match):
    with pytest.raises(fs.InputError, match=match):
        fs.load("protonet-omniglot").adapt(glyphs[0], finetune=finetune)


def test_methods_without_fine_tuning_say_so(glyphs):
    with pytest.raises(fs.InputError, match="mann takes no options"):
        fs.load("mann-omniglot").adapt(glyphs[0], finetune="auto")
    with pytest.raises(fs.InputError, match=r"unknown \['finetune'\]; maml takes steps"):
        fs.load("maml-omniglot").adapt(glyphs[0], finetune="auto")
    assert FineTuneSettings().stages >= 1
