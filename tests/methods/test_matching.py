import pytest
import torch
import torch.nn.functional as F
from method_support import accuracy_before_and_after_training, assert_refuses_bad_support, random_task

import fewshot_sdk as fs
from fewshot_sdk.methods.matching import MatchingFCE, MatchingNet
from fewshot_sdk.train.loop import TrainConfig


@pytest.mark.parametrize("name", ["matching", "matching-fce"])
def test_shapes_and_probabilities_sum_to_one(name):
    learner = fs.create(name)
    x, y, q = random_task()
    state = learner.adapt_tensors(x, y, 3)
    assert state["support"].shape == (7, 64) and state["support_classes"].shape == (7, 3)
    prediction = learner.adapt(fs.SupportSet.from_tensors(x, y)).predict(q)
    assert prediction.probs.shape == (5, 3) and prediction.indices.shape == (5,)
    torch.testing.assert_close(prediction.probs.sum(1), torch.ones(5))


def test_matching_fce_is_its_own_method_with_fce_on_and_reloads_as_fce(tmp_path):
    learner = fs.create("matching-fce")
    assert isinstance(learner, MatchingFCE) and learner.config.fce and learner.query_reader is not None
    plain = fs.create("matching")
    assert type(plain) is MatchingNet and not plain.config.fce and plain.query_reader is None
    x, y, q = random_task(seed=5)
    reloaded = fs.load(learner.save(tmp_path / "fce"))
    assert reloaded.method == "matching-fce" and reloaded.config.fce
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.score(reloaded.adapt_tensors(x, y, 3), q), learner.score(learner.adapt_tensors(x, y, 3), q)
        )


def test_simple_score_is_log_of_cosine_attention_over_support_labels_in_float64():
    learner = fs.create("matching").double()
    x, y, q = random_task(torch.float64, seed=1)
    state = learner.fit_task(x, y, 3)
    with torch.no_grad():
        f, g = learner.backbone(q), learner.backbone(x)
        attention = F.cosine_similarity(f[:, None, :], g[None], dim=-1).softmax(-1)  # a(x, x_i), eq. 2
        expected = attention @ F.one_hot(y, 3).double()  # P(y | x, S) = sum_i a(x, x_i) y_i, eq. 1
        logits = learner.score(state, q)
        torch.testing.assert_close(logits, expected.log())
        torch.testing.assert_close(learner.probabilities(logits), expected)


def _lstm(x, state, cell_state, w_x, b_x, w_s, b_s=0.0):
    """The textbook LSTM equations, gates in the order i, f, g, o."""
    gates = x @ w_x.T + b_x + state @ w_s.T + b_s
    i, f, g, o = gates.chunk(4, -1)
    cell_state = torch.sigmoid(f) * cell_state + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell_state), cell_state


def test_fce_embeddings_follow_the_papers_equations_step_by_step_in_float64():
    torch.manual_seed(2)
    learner = fs.create("matching-fce", processing_steps=3).double()
    x, y, q = random_task(torch.float64, seed=2)
    state = learner.fit_task(x, y, 3)
    with torch.no_grad():
        g_prime, f_prime = learner.backbone(x), learner.backbone(q)
        d = g_prime.shape[1]
        lstm = learner.support_context.lstm
        # A.2: g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i), one sequence over the support in order.
        names = ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")
        params = [getattr(lstm, n) for n in names]
        rev = [getattr(lstm, n + "_reverse") for n in names]
        h, c, forward = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), []
        for i in range(len(x)):
            h, c = _lstm(g_prime[i], h, c, *params)
            forward.append(h)
        h, c, backward = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), [None] * len(x)
        for i in reversed(range(len(x))):
            h, c = _lstm(g_prime[i], h, c, *rev)
            backward[i] = h
        g = torch.stack(forward) + torch.stack(backward) + g_prime
        torch.testing.assert_close(state["support"], g)

        # A.1: attLSTM, one query at a time, K = 3 steps from h_0 = c_0 = 0.
        reader = learner.query_reader
        expected = []
        for fx in f_prime:
            h, c = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
            for _ in range(3):
                a = torch.softmax(g @ h, 0)  # a(h_{k-1}, g(x_i)) = softmax(h^T g(x_i))
                r = (a[:, None] * g).sum(0)  # r_{k-1} = sum_i a(h_{k-1}, g(x_i)) g(x_i)
                h_hat, c = _lstm(
                    fx,
                    torch.cat([h, r]),
                    c,
                    reader.input_gates.weight,
                    reader.input_gates.bias,
                    reader.state_gates.weight,
                )  # h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})
                h = h_hat + fx  # h_k = h^_k + f'(x)
            expected.append(h)
        f = torch.stack(expected)
        torch.testing.assert_close(reader(f_prime, g), f)
        attention = F.cosine_similarity(f[:, None, :], g[None], dim=-1).softmax(-1)
        torch.testing.assert_close(learner.score(state, q), (attention @ F.one_hot(y, 3).double()).log())


@pytest.mark.parametrize("name", ["matching", "matching-fce"])
def test_export_module_matches_score(name):
    torch.manual_seed(3)
    learner = fs.create(name)
    x, y, q = random_task(seed=3)
    state = learner.adapt_tensors(x, y, 3)
    with torch.no_grad():
        torch.testing.assert_close(learner.export_module(state)(q)[0], learner.score(state, q))


@pytest.mark.parametrize("name", ["matching", "matching-fce"])
def test_a_few_hundred_episodes_on_real_glyphs_lift_accuracy_well_above_untrained(omniglot_splits, name):
    torch.manual_seed(0)
    learner = fs.create(name, temperature=0.05)  # the shipped models' setting (benchmarks/results/matching.md)
    config = TrainConfig(episodes=150, n_way=10, k_shot=1, q_queries=5, val_every=150, val_episodes=20, seed=0)
    before, after = accuracy_before_and_after_training(learner, omniglot_splits, config, episodes=40)
    assert after.accuracy > 0.75, after
    assert after.accuracy > before.accuracy + 0.1, (before, after)


@pytest.mark.parametrize("name", ["matching", "matching-fce"])
def test_bad_support_is_refused_cleanly(name):
    learner = fs.create(name)
    assert_refuses_bad_support(learner)
    with pytest.raises(fs.InputError, match="processing_steps"):
        fs.create(name, processing_steps=0)
