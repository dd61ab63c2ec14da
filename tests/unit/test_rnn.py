"""The hand-written Elman RNN against torch's nn.RNN, the recurrent classifier, the recall task,
the gradient reaching each position, and lesson 07's recurrence exercise checks."""

import numpy as np
import pytest
import torch
from torch import nn

from maaslab.errors import MaaslabError
from maaslab.exercises import attention as ac
from maaslab.models.attention import AttentionConfig, SequenceClassifier
from maaslab.models.rnn import (
    ElmanRNN,
    RecurrentClassifier,
    RNNConfig,
    copy_to_torch_rnn,
    position_gradient_norms,
    recall_dataset,
    rnn_step,
)
from maaslab.train import TrainConfig, evaluate_split, train


def test_rnn_step_matches_torch_rnn_cell():
    torch.manual_seed(0)
    cell = nn.RNNCell(3, 4)
    x, h = torch.randn(5, 3), torch.randn(5, 4)
    b = cell.bias_ih + cell.bias_hh  # torch keeps two biases; their sum is our b
    ours = rnn_step(x, h, cell.weight_ih, cell.weight_hh, b)
    torch.testing.assert_close(ours, cell(x, h))


@pytest.mark.parametrize("with_h0", [False, True])
def test_elman_rnn_matches_nn_rnn_step_for_step_with_copied_weights(with_h0):
    torch.manual_seed(0)
    ours = ElmanRNN(input_size=3, hidden_size=5)
    theirs = copy_to_torch_rnn(ours)
    x = torch.randn(4, 7, 3, requires_grad=True)
    h0 = torch.randn(4, 5) if with_h0 else None
    states, last = ours(x, h0)
    ref_states, ref_last = theirs(x, None if h0 is None else h0.unsqueeze(0))
    assert states.shape == (4, 7, 5) and last.shape == (4, 5)
    torch.testing.assert_close(states, ref_states)  # every step, not just the last
    torch.testing.assert_close(last, ref_last[0])
    # The gradients through the whole recurrence agree too.
    (grad_ours,) = torch.autograd.grad(states.square().sum(), x)
    (grad_theirs,) = torch.autograd.grad(ref_states.square().sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs)
    (ours_wh,) = torch.autograd.grad(ours(x)[0].sum(), ours.h_proj.weight)
    (theirs_wh,) = torch.autograd.grad(theirs(x)[0].sum(), theirs.weight_hh_l0)
    torch.testing.assert_close(ours_wh, theirs_wh)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_recurrent_classifier_reads_token_ids_and_returns_logits(cell):
    torch.manual_seed(0)
    model = RecurrentClassifier(RNNConfig(cell=cell, vocab_size=6, n_classes=4, hidden_size=8))
    ids = torch.randint(0, 6, (3, 9)).float()  # a Dataset feeds float32 ids
    assert model(ids).shape == (3, 4)
    recurrent = nn.LSTM if cell == "lstm" else ElmanRNN
    assert isinstance(model.recurrent, recurrent)


def test_lstm_forget_gates_start_open():
    model = RecurrentClassifier(RNNConfig(cell="lstm", hidden_size=8))
    lstm = model.recurrent
    forget = lstm.bias_ih_l0[8:16] + lstm.bias_hh_l0[8:16]  # torch's gate order: i, f, g, o
    assert torch.equal(forget, torch.ones(8))
    assert not torch.equal(lstm.bias_ih_l0[:8], torch.ones(8))  # the other gates are untouched


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "gru"}, "unknown cell 'gru'"),
        ({"hidden_size": 0}, "must be positive integers"),
    ],
)
def test_rnn_config_says_what_is_wrong(kwargs, message):
    with pytest.raises(MaaslabError, match=message):
        RNNConfig(**kwargs)


def test_recall_dataset_labels_each_sequence_with_its_first_digit():
    data = recall_dataset(n_samples=200, distance=5, vocab_size=4, seed=3)
    assert data.X_train.shape == (140, 6) and data.X_val.shape == (20, 6)
    assert data.X_test.shape == (40, 6) and data.input_shape == (6,)
    for X, y in ((data.X_train, data.y_train), (data.X_test, data.y_test)):
        assert X.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(y, X[:, 0])
    assert set(np.unique(data.X_train)) == {0, 1, 2, 3} and data.n_classes == 4
    again = recall_dataset(n_samples=200, distance=5, vocab_size=4, seed=3)
    np.testing.assert_array_equal(again.X_test, data.X_test)
    other = recall_dataset(n_samples=200, distance=5, vocab_size=4, seed=4)
    assert not np.array_equal(other.X_test, data.X_test)
    with pytest.raises(MaaslabError, match="distance >= 1"):
        recall_dataset(distance=0)


def test_trained_through_maaslab_train_it_recalls_a_digit_two_steps_back():
    data = recall_dataset(n_samples=600, distance=2, seed=0)
    torch.manual_seed(0)
    model = RecurrentClassifier(RNNConfig(cell="rnn"))
    history = train(model, data, TrainConfig(epochs=8, lr=1e-2, batch_size=32, seed=0))
    assert history.last.val_accuracy > 0.9
    assert evaluate_split(model, data, "test")[1] > 0.9


def _batch(T=12, B=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (B, T), generator=g).float(), torch.randint(
        0, 10, (B,), generator=g
    )


def test_position_gradient_norms_match_autograd_by_hand():
    torch.manual_seed(0)
    model = RecurrentClassifier(RNNConfig(cell="rnn"))
    x, y = _batch()
    norms = position_gradient_norms(model, model.embed, x, y)
    e = model.embed(x.long()).detach().requires_grad_()
    states, _ = model.recurrent(e)
    loss = nn.functional.cross_entropy(model.head(states[:, -1]), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, e)
    np.testing.assert_allclose(norms, grad.norm(dim=-1).mean(0).numpy(), rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # it leaves no gradients behind


def test_without_w_h_no_gradient_reaches_the_earlier_positions():
    torch.manual_seed(0)
    model = RecurrentClassifier(RNNConfig(cell="rnn"))
    with torch.no_grad():
        model.recurrent.h_proj.weight.zero_()  # nothing is carried from one step to the next
    norms = position_gradient_norms(model, model.embed, *_batch())
    assert np.all(norms[:-1] == 0) and norms[-1] > 0


def test_gradient_fades_with_distance_in_an_rnn_not_in_attention():
    torch.manual_seed(0)
    rnn = RecurrentClassifier(RNNConfig(cell="rnn"))
    attn = SequenceClassifier(AttentionConfig(embed_dim=32, num_heads=2), 10, 24, 10)
    x, y = _batch(T=24)
    g_rnn = position_gradient_norms(rnn, rnn.embed, x, y)
    g_attn = position_gradient_norms(attn, attn.tok_emb, x, y)
    assert np.all(np.diff(g_rnn) > 0)  # every step back loses gradient
    assert g_rnn[0] / g_rnn[-2] < 1e-3
    assert 0.1 < g_attn[0] / g_attn[-2] < 10  # the first position is one step away, like any


def test_position_gradient_norms_refuse_an_embedding_the_model_does_not_use():
    model = RecurrentClassifier(RNNConfig(cell="lstm"))
    with pytest.raises(MaaslabError, match="not the model's token embedding"):
        position_gradient_norms(model, nn.Embedding(10, 16), *_batch())


# ---- exercise checks: a right answer passes, each known mistake fails with its own message ----


def _step(x, h, w_x, w_h, b):
    return torch.tanh(x @ w_x.T + h @ w_h.T + b)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda x, h, w_x, w_h, b: x @ w_x.T + h @ w_h.T + b, "apply torch.tanh"),
        (lambda x, h, w_x, w_h, b: torch.tanh(x @ w_x.T + b), "h_prev is missing"),
        (lambda x, h, w_x, w_h, b: torch.tanh(x @ w_x.T + h @ w_h.T), "bias b is missing"),
        (lambda x, h, w_x, w_h, b: torch.tanh(x @ w_x.T + h @ w_h + b), "W_h is used transposed"),
        (lambda x, h, w_x, w_h, b: torch.tanh(x @ w_x.T + b) + h @ w_h.T, "wrap the whole sum"),
        (lambda x, h, w_x, w_h, b: torch.sigmoid(x @ w_x.T + h @ w_h.T + b), "that is a sigmoid"),
        (lambda x, h, w_x, w_h, b: torch.relu(x @ w_x.T + h @ w_h.T + b), "that is a ReLU"),
        (lambda x, h, w_x, w_h, b: torch.tanh(x @ w_x + h @ w_h.T + b), "raised RuntimeError"),
        (lambda x, h, w_x, w_h, b: _step(x, h, w_x, w_h, b)[0], "shape"),
        (lambda x, h, w_x, w_h, b: _step(x, h, w_x, w_h, b) + 0.01, "largest difference"),
        (lambda x, h, w_x, w_h, b: None, "forget `return`"),
    ],
)
def test_check_rnn_step(answer, message):
    assert ac.check_rnn_step(_step).passed
    assert ac.check_rnn_step(lambda x, h, w_x, w_h, b: rnn_step(x, h, w_x, w_h, b).numpy())
    result = ac.check_rnn_step(answer)
    assert not result.passed and message in result.message


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda s, T: T - s, "one too many"),
        (lambda s, T: T - s - 2, "one too few"),
        (lambda s, T: s, "counted from the start"),
        (lambda s, T: T - 1, "must depend on s"),
        (lambda s, T: T, "must depend on s"),
        (lambda s, T: (T - 1 - s) * 2, "largest difference"),
        (lambda s, T: "T-1-s", "expected a tensor or array"),
        (lambda s, T: 1 / s, "raised ZeroDivisionError"),
    ],
)
def test_check_recurrent_hops(answer, message):
    assert ac.check_recurrent_hops(lambda s, T: T - 1 - s).passed
    assert ac.check_recurrent_hops(lambda s, T: len(range(s + 1, T))).passed
    result = ac.check_recurrent_hops(answer)
    assert not result.passed and message in result.message
