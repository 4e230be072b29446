import math

import onnxruntime
import pytest
import torch
from method_support import assert_sampler_episode_adapts_and_predicts

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.methods import _memory
from fewshot_sdk.methods.mann import MEMORY_INIT, vary_task_size

TINY = dict(max_classes=3, controller_size=6, memory_slots=5, memory_width=3, read_heads=2, temperature=0.5)


def tiny_mann(**overrides):
    torch.manual_seed(0)
    return fs.create("mann", **{**TINY, **overrides}).double()


def direct_lrua_sequence(learner, features, labels):
    """Santoro's equations written out slot by slot, in float64, for one episode."""
    cfg = learner.config
    slots, width, heads, classes = cfg.memory_slots, cfg.memory_width, cfg.read_heads, cfg.max_classes
    row = width + classes  # a row: a key, then the label entries
    memory = [[MEMORY_INIT] * row for _ in range(slots)]
    usage = [0.0] * slots
    prev_read_w = [[0.0] * slots for _ in range(heads)]
    reads = torch.zeros(1, heads * row, dtype=torch.float64)
    prev_keys = [[0.0] * width for _ in range(heads)]
    h = torch.zeros(1, cfg.controller_size, dtype=torch.float64)
    c = torch.zeros_like(h)
    all_logits = []
    for t in range(len(labels)):
        prev = torch.zeros(1, cfg.max_classes, dtype=torch.float64)
        if t > 0:
            prev[0, labels[t - 1]] = 1.0  # the label arrives one step late
        h, c = learner.controller(torch.cat([features[t : t + 1], prev, reads], 1), (h, c))
        keys = torch.tanh(learner.key(h))[0].view(heads, width).tolist()
        # eq. 8 writes the key: the previous step's key, bound to the label that has just arrived
        adds = [prev_keys[k] + prev[0].tolist() for k in range(heads)]
        queries = [keys[k] + [0.0] * classes for k in range(heads)]  # addressing compares the key part
        alphas = learner.gate(h)[0].tolist()
        # eq. 6: the n least-used slots, n = heads (ties to the lower index)
        least_used = sorted(range(slots), key=lambda i: (usage[i], i))[:heads]
        w_lu = [1.0 if i in least_used else 0.0 for i in range(slots)]
        # eq. 7
        sig = [1 / (1 + math.exp(-a)) for a in alphas]
        w_w = [[sig[k] * prev_read_w[k][i] + (1 - sig[k]) * w_lu[i] for i in range(slots)] for k in range(heads)]
        # the least-used slot is zeroed, then eq. 8
        lu_row = least_used[0]
        memory[lu_row] = [0.0] * row
        memory = [
            [memory[i][j] + sum(w_w[k][i] * adds[k][j] for k in range(heads)) for j in range(row)] for i in range(slots)
        ]
        # eqs. 2-4: cosine, softmax, weighted sum
        read_w, read_vectors = [], []
        for k in range(heads):
            cos = []
            for i in range(slots):
                dot = sum(queries[k][j] * memory[i][j] for j in range(row))
                norm_k = math.sqrt(sum(v * v for v in queries[k]))
                norm_m = math.sqrt(sum(v * v for v in memory[i]))
                cos.append(dot / (max(norm_k, 1e-8) * max(norm_m, 1e-8)))  # an empty row scores 0
            exps = [math.exp(v / cfg.temperature) for v in cos]
            read_w.append([e / sum(exps) for e in exps])
            read_vectors += [sum(read_w[k][i] * memory[i][j] for i in range(slots)) for j in range(row)]
        # eq. 5
        usage = [cfg.gamma * usage[i] + sum(read_w[k][i] + w_w[k][i] for k in range(heads)) for i in range(slots)]
        prev_read_w, prev_keys = read_w, keys
        reads = torch.tensor([read_vectors], dtype=torch.float64)
        all_logits.append(learner.output(torch.cat([h, reads], 1))[0])
    return torch.stack(all_logits), torch.tensor(memory, dtype=torch.float64), torch.tensor(usage, dtype=torch.float64)


def test_lrua_sequence_matches_the_papers_equations_step_by_step_in_float64():
    learner = tiny_mann()
    features = torch.randn(9, learner.backbone.out_features, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1])  # 9 writes into 5 slots: slots are reused
    with torch.no_grad():
        state, logits = learner.run_sequence(features.unsqueeze(0), labels.unsqueeze(0), flush=False)
        expected_logits, expected_memory, expected_usage = direct_lrua_sequence(learner, features, labels)
    torch.testing.assert_close(logits[0], expected_logits)
    torch.testing.assert_close(state.memory[0], expected_memory)
    torch.testing.assert_close(state.usage[0], expected_usage)


def test_least_used_weights_are_the_paper_definition_with_distinct_usages():
    usage = torch.tensor([[0.7, 0.1, 0.9, 0.3, 0.5]], dtype=torch.float64)
    for n in (1, 2, 3):
        nth_smallest = usage.sort().values[0, n - 1]
        torch.testing.assert_close(_memory.least_used_weights(usage, n), (usage <= nth_smallest).double())


def test_labels_are_presented_one_step_late():
    learner = tiny_mann()
    features = torch.randn(1, 6, learner.backbone.out_features, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2]])
    changed = labels.clone()
    changed[0, 3] = 2
    with torch.no_grad():
        _, a = learner.run_sequence(features, labels)
        _, b = learner.run_sequence(features, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # step t never sees y_t
    assert not torch.allclose(a[:, 4], b[:, 4])  # step t+1 does


def test_training_batches_shuffle_labels_per_episode_and_score_every_step():
    learner = tiny_mann(max_classes=6).train()
    episode = Episode(
        torch.randn(6, 1, 28, 28, dtype=torch.float64),
        torch.tensor([0, 0, 1, 1, 2, 2]),
        torch.randn(3, 1, 28, 28, dtype=torch.float64),
        torch.tensor([0, 1, 2]),
        3,
    )
    torch.manual_seed(1)
    loss_a, logits, targets = learner.batch_loss([episode, episode])
    torch.manual_seed(2)
    loss_b, _, _ = learner.batch_loss([episode, episode])
    assert logits.shape == (6, 3) and targets.tolist() == [0, 1, 2, 0, 1, 2]
    assert not torch.isclose(loss_a, loss_b)  # a different label permutation and order: a different task
    loss_a.backward()
    assert all(p.grad is not None for n, p in learner.named_parameters() if not n.startswith("backbone"))


def test_vary_task_size_cuts_ways_and_shots_consistently():
    torch.manual_seed(0)
    episode = Episode(
        torch.randn(12, 1, 4, 4),
        torch.arange(4).repeat_interleave(3),
        torch.randn(8, 1, 4, 4),
        torch.arange(4).repeat_interleave(2),
        4,
    )
    for _ in range(10):
        (cut,) = vary_task_size([episode])
        shots = len(cut.support_y) // cut.n_way
        assert 2 <= cut.n_way <= 4 and 1 <= shots <= 3
        assert cut.support_y.tolist() == torch.arange(cut.n_way).repeat_interleave(shots).tolist()
        assert cut.query_y.tolist() == torch.arange(cut.n_way).repeat_interleave(2).tolist()


def support_and_queries(n_way=3, shots=2, queries=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_way * shots, 1, 28, 28, generator=g)
    y = torch.arange(n_way).repeat_interleave(shots)
    return fs.SupportSet.from_tensors(x, y), torch.randn(queries, 1, 28, 28, generator=g)


def test_predictions_do_not_depend_on_query_order_and_adapt_is_deterministic():
    torch.manual_seed(0)
    learner = fs.create("mann", max_classes=5)
    support, queries = support_and_queries()
    task = learner.adapt(support)
    again = learner.adapt(support)
    for name in task.state:
        torch.testing.assert_close(task.state[name], again.state[name])
    probs = task.predict(queries).probs
    perm = torch.randperm(len(queries))
    torch.testing.assert_close(task.predict(queries[perm]).probs, probs[perm])
    torch.testing.assert_close(task.predict(queries[:1]).probs, probs[:1])
    assert probs.shape == (7, 3)  # 3 of the 5 label slots


def test_support_sets_with_more_classes_than_label_slots_are_refused():
    learner = fs.create("mann", max_classes=4)
    support, _ = support_and_queries(n_way=6, shots=1)
    with pytest.raises(fs.InputError, match=r"max_classes=4.*6 classes"):
        learner.adapt(support)
    with pytest.raises(fs.InputError, match="SupportSet"):
        learner.adapt({"a": []})
    regression = fs.SupportSet.from_tensors(torch.randn(4, 1, 28, 28), torch.randn(4), task="regression")
    with pytest.raises(fs.InputError, match="class indices"):
        learner.adapt(regression)


def test_a_training_batch_of_mixed_shapes_is_refused():
    learner = fs.create("mann", max_classes=5)
    small = Episode(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]), torch.randn(2, 1, 28, 28), torch.tensor([0, 1]), 2)
    large = Episode(
        torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2]), torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2]), 3
    )
    with pytest.raises(fs.InputError, match="one shape"):
        learner.batch_loss([small, large])


def test_onnx_export_gives_the_same_probabilities_and_saved_tasks_reload(tmp_path):
    torch.manual_seed(0)
    learner = fs.create("mann", max_classes=5)
    support, queries = support_and_queries()
    task = learner.adapt(support)
    session = onnxruntime.InferenceSession(str(task.export_onnx(tmp_path / "mann.onnx")))
    outputs = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"images": queries.numpy()}), strict=True)
    )
    torch.testing.assert_close(torch.from_numpy(outputs["probs"]), task.predict(queries).probs, rtol=1e-4, atol=1e-5)
    reloaded = fs.load_task(task.save(tmp_path / "task"))
    torch.testing.assert_close(reloaded.predict(queries).probs, task.predict(queries).probs)


def glyph_episode(images, ways, generator, noise=1.0):
    """Real glyphs as the classes of an episode, noisy copies as its instances (3 support, 2 queries each)."""
    glyphs = images[torch.randint(len(images), (ways,), generator=generator)]
    y, q = torch.arange(ways).repeat_interleave(3), torch.arange(ways).repeat_interleave(2)
    noisy = lambda labels: glyphs[labels] + noise * torch.randn(len(labels), 1, 28, 28, generator=generator)  # noqa: E731
    return Episode(noisy(y), y, noisy(q), q, ways)


def test_training_on_real_glyphs_lifts_accuracy_above_chance(omniglot_splits):
    """The binding mechanism learns within a small budget (a CPU-cheap configuration, raw-pixel encoder).

    Each episode binds freshly drawn real glyphs to shuffled labels, so only memory
    can answer; the full-data accuracy is the shipped model's benchmark.
    """
    torch.manual_seed(0)
    learner = fs.create("mann", max_classes=3, encoder="pixels", controller_size=32, read_heads=1).train()
    optimizer = torch.optim.Adam(learner.parameters(), 3e-3)
    images, train_gen = omniglot_splits.train.images, torch.Generator().manual_seed(0)
    for _ in range(120):
        learner.train_step([glyph_episode(images, 3, train_gen) for _ in range(16)], optimizer)
    learner.eval()
    test_images, test_gen = omniglot_splits.val.images, torch.Generator().manual_seed(1)
    correct = total = 0
    for _ in range(30):
        episode = glyph_episode(test_images, 3, test_gen)
        prediction = learner.adapt(fs.SupportSet.from_tensors(episode.support_x, episode.support_y)).predict(
            episode.query_x
        )
        correct += int((prediction.indices == episode.query_y).sum())
        total += len(episode.query_y)
    assert correct / total > 0.55, correct / total  # chance is 1/3


def test_sampler_episodes_feed_adapt_and_predict(omniglot_splits):
    assert_sampler_episode_adapts_and_predicts(fs.create("mann", max_classes=5), omniglot_splits)
