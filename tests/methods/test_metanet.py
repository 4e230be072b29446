import math

import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from method_support import assert_sampler_episode_adapts_and_predicts, fixed_val_accuracy

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.methods.metanet import preprocess_gradient, verification_pairs
from fewshot_sdk.train.loop import TrainConfig, meta_train


def small_metanet(**settings):
    torch.manual_seed(0)
    return fs.create("metanet", **{"max_classes": 6, "key_size": 8, "base_hidden": 5, **settings}).double()


def task(n_way=3, shots=2, queries=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_way * shots, 1, 28, 28, generator=g, dtype=dtype)
    return x, torch.arange(n_way).repeat_interleave(shots), torch.randn(queries, 1, 28, 28, generator=g, dtype=dtype)


def test_fast_weight_and_memory_shapes():
    learner = small_metanet()
    x, y, _ = task(n_way=3, shots=2)
    state = learner.adapt_tensors(x, y, 3)
    features = learner.backbone.out_features
    assert state["fast_w"].shape == (8, features) and state["fast_b"].shape == (8,)  # theta+: the embedding's top
    assert state["keys"].shape == (6, 8)  # r'_i, one per support example
    assert state["memory"].shape == (6, 6 * (5 + 1))  # phi+_i: the base learner's output layer, flattened
    assert state["classes"].tolist() == [0, 1, 2]


def test_score_is_the_papers_read_and_layer_augmentation_in_float64():
    learner = small_metanet(temperature=0.5)
    x, y, q = task()
    with torch.no_grad():
        state = learner.fit_task(x, y, 3)
        z = learner.backbone(q)
        slow = learner.embedding.slow
        r = F.relu(slow(z)) + F.relu(z @ state["fast_w"].T + state["fast_b"])
        cos = F.normalize(r, dim=1) @ F.normalize(state["keys"], dim=1).T
        phi = torch.softmax(cos / 0.5, dim=1) @ state["memory"]  # phi+ = softmax(cos(R, r))^T M
        phi = phi.view(len(q), 6, 6)
        u = learner.base_hidden(z)
        logits = learner.base_output.slow(u) + torch.einsum("bcu,bu->bc", phi[:, :, :5], u) + phi[:, :, 5]
        torch.testing.assert_close(learner.score(state, q), logits[:, :3])


def test_meta_information_is_the_loss_gradient():
    learner = small_metanet()
    x, y, _ = task(n_way=3, shots=2)
    slots = torch.tensor([4, 0, 2])
    z = learner.backbone(x).detach()
    u = learner.base_hidden(z).detach()
    per_example = learner.base_gradients(u, y, slots)
    layer = learner.base_output.slow
    for i in range(len(y)):
        loss = F.cross_entropy(layer(u[i : i + 1]).index_select(1, slots), y[i : i + 1])
        gw, gb = torch.autograd.grad(loss, [layer.weight, layer.bias])
        torch.testing.assert_close(per_example[i], torch.cat([gw, gb.unsqueeze(1)], 1).flatten())
    pairs = learner.embedding_gradients(z, y)
    first, second, same = verification_pairs(y, learner.config.verification_pairs, learner.config.pair_seed)
    scale, bias = learner.verification.detach()
    emb = learner.embedding.slow
    for j in range(len(first)):
        ra, rb = F.relu(emb(z[first[j]])), F.relu(emb(z[second[j]]))
        loss = F.binary_cross_entropy_with_logits(scale * F.cosine_similarity(ra, rb, dim=0) + bias, same[j])
        gw, gb = torch.autograd.grad(loss, [emb.weight, emb.bias])
        torch.testing.assert_close(pairs[j], torch.cat([gw.flatten(), gb]))


def test_verification_pairs_are_balanced_and_repeatable():
    labels = torch.arange(4).repeat_interleave(3)
    first, second, same = verification_pairs(labels, 8, seed=0)
    again = verification_pairs(labels, 8, seed=0)
    assert len(first) == 8 and int(same.sum()) == 4 and bool((first < second).all())
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert torch.equal(same.bool(), labels[first] == labels[second])
    one_shot = verification_pairs(torch.arange(5), 8, seed=0)
    assert len(one_shot[0]) == 8 and int(one_shot[2].sum()) == 0  # no same-class pairs exist


def test_gradient_preprocessing_follows_andrychowicz():
    g = torch.tensor([0.5, -2.0, 1e-6, 0.0], dtype=torch.float64)
    out = preprocess_gradient(g)
    expected = [
        [math.log(0.5) / 10, 1.0],
        [math.log(2.0) / 10, -1.0],
        [-1.0, 1e-6 * math.exp(10)],
        [-1.0, 0.0],
    ]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_fast_weights_change_predictions():
    learner = small_metanet()
    x, y, q = task()
    with torch.no_grad():
        state = learner.fit_task(x, y, 3)
        other_task_weights = {**state, "fast_w": torch.randn_like(state["fast_w"])}
        no_example_weights = {**state, "memory": torch.zeros_like(state["memory"])}
        logits = learner.score(state, q)
        assert not torch.allclose(learner.score(other_task_weights, q), logits)
        assert not torch.allclose(learner.score(no_example_weights, q), logits)
        other_support = learner.fit_task(x.flip(0), y, 3)  # the same images bound to other labels
        assert not torch.allclose(learner.score(other_support, q), logits)


def test_training_shuffles_label_slots_and_reaches_every_meta_learner():
    learner = small_metanet().train()
    x, y, q = task()
    episode = Episode(x, y, q, torch.tensor([0, 1, 2, 0]), 3)
    loss, logits = learner.episode_loss(episode)
    assert logits.shape == (4, 3)
    loss.backward()
    for name in ("task_meta", "example_meta", "embedding", "base_hidden", "backbone"):
        grads = [p.grad for n, p in learner.named_parameters() if n.startswith(name)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_too_many_classes_and_bad_support_are_refused():
    learner = fs.create("metanet", max_classes=4)
    x, y, _ = task(n_way=5, shots=1, dtype=torch.float32)
    with pytest.raises(fs.InputError, match=r"max_classes=4.*5 classes"):
        learner.adapt(fs.SupportSet.from_tensors(x, y))
    with pytest.raises(fs.InputError, match="SupportSet"):
        learner.adapt([x, y])
    regression = fs.SupportSet.from_tensors(x, torch.randn(len(x)), task="regression")
    with pytest.raises(fs.InputError, match="class indices"):
        learner.adapt(regression)


def test_onnx_export_gives_the_same_probabilities_and_saved_tasks_reload(tmp_path):
    torch.manual_seed(0)
    learner = fs.create("metanet", max_classes=5)
    x, y, q = task(dtype=torch.float32)
    adapted = learner.adapt(fs.SupportSet.from_tensors(x, y))
    session = onnxruntime.InferenceSession(str(adapted.export_onnx(tmp_path / "metanet.onnx")))
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": q.numpy()}), strict=True))
    torch.testing.assert_close(torch.from_numpy(outputs["probs"]), adapted.predict(q).probs, rtol=1e-4, atol=1e-5)
    reloaded = fs.load_task(adapted.save(tmp_path / "task"))
    torch.testing.assert_close(reloaded.predict(q).probs, adapted.predict(q).probs)


def test_a_hundred_episodes_on_real_glyphs_lift_accuracy_well_above_chance(omniglot_splits):
    torch.manual_seed(0)
    learner = fs.create("metanet", max_classes=5)
    config = TrainConfig(episodes=100, n_way=5, k_shot=1, q_queries=5, val_every=100, val_episodes=20)
    meta_train(learner, omniglot_splits.train, omniglot_splits.val, config)
    after = fixed_val_accuracy(learner, omniglot_splits, episodes=40)
    assert after.accuracy > 0.6, after


def test_sampler_episodes_feed_adapt_and_predict(omniglot_splits):
    assert_sampler_episode_adapts_and_predicts(fs.create("metanet", max_classes=5), omniglot_splits)
