"""Lesson 04's NumPy network against torch autograd and finite differences; bugs; checks."""

import ast
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from maaslab import MaaslabError, plots
from maaslab.data import load_dataset
from maaslab.exercises.backprop_from_scratch import (
    check_gradient_check_result,
    check_linear_backward,
    check_relu_backward,
    check_softmax_xent_grad,
)
from maaslab.exercises.grading import CheckResult
from maaslab.scratch import (
    BUGS,
    GradCheckResult,
    ScratchConfig,
    ScratchMLP,
    accuracy,
    bounded_relative_error,
    fit,
    gradient_check,
    linear_backward,
    numerical_gradient,
    relu_backward,
    sgd_step,
    softmax,
    softmax_cross_entropy,
    to_torch,
    torch_gradients,
)

ARCHITECTURES = [
    # (hidden, activation, loss, out_features)
    ((16, 16), "relu", "cross_entropy", 2),
    ((8,), "tanh", "cross_entropy", 3),
    ((6, 5, 4), "sigmoid", "cross_entropy", 2),
    ((), "relu", "cross_entropy", 2),
    ((10,), "tanh", "mse", 1),
    ((7, 7), "relu", "mse", 3),
]


@pytest.fixture(scope="module")
def moons():
    return load_dataset("moons", n_samples=400, noise=0.2, seed=0)


def _batch(loss: str, out_features: int, n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    if loss == "mse":
        y = rng.normal(size=(n,) if out_features == 1 else (n, out_features))
    else:
        y = rng.integers(0, out_features, size=n)
    return X, y


def _model(hidden, activation, loss, out_features, seed=0):
    cfg = ScratchConfig(2, hidden, out_features, activation, loss, seed)
    return ScratchMLP(cfg)


# --- oracles: torch autograd and finite differences ---------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: f"{a[1]}-{a[2]}-{len(a[0])}")
def test_gradients_match_torch_autograd(arch):
    model = _model(*arch)
    X, y = _batch(arch[2], arch[3])
    loss, grads = model.loss_and_grads(X, y)
    torch_loss, torch_grads = torch_gradients(model, X, y)
    assert loss == pytest.approx(torch_loss, rel=1e-12)
    assert list(grads) == list(torch_grads) == list(model.params)
    for name, g in grads.items():
        assert g.shape == model.params[name].shape
        assert bounded_relative_error(g, torch_grads[name]) <= 1e-6, name


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: f"{a[1]}-{a[2]}-{len(a[0])}")
def test_gradients_match_finite_differences(arch):
    model = _model(*arch, seed=3)
    X, y = _batch(arch[2], arch[3], seed=3)
    result = gradient_check(model, X, y)
    assert result.passed and result.max_error < 1e-6, result.errors
    assert result.checked == sum(p.size for p in model.params.values())


def test_gradient_check_can_sample_entries_and_leaves_params_unchanged():
    model = _model((16, 16), "relu", "cross_entropy", 2)
    before = {k: v.copy() for k, v in model.params.items()}
    X, y = _batch("cross_entropy", 2)
    result = gradient_check(model, X, y, n_per_param=5)
    assert result.passed and result.checked == 5 * 5 + 2  # b3 has only 2 entries
    assert all(np.array_equal(before[k], model.params[k]) for k in before)


def test_numerical_gradient_of_a_known_function():
    x = np.array([[0.5, -1.0], [2.0, 0.1]])
    grad = numerical_gradient(lambda: float(np.sum(x**3)), x)
    np.testing.assert_allclose(grad, 3 * x**2, rtol=1e-8)
    assert np.array_equal(x, [[0.5, -1.0], [2.0, 0.1]])  # restored
    partial = numerical_gradient(lambda: float(np.sum(x**3)), x, index=np.array([3]))
    assert partial[1, 1] == pytest.approx(0.03) and np.count_nonzero(partial) == 1


def test_relative_error_scale():
    a = np.array([1.0, -2.0, 3.0])
    assert bounded_relative_error(a, a) == 0.0
    assert bounded_relative_error(a, -a) == pytest.approx(1.0)
    assert bounded_relative_error(a, np.zeros(3)) == pytest.approx(1.0)
    assert bounded_relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert bounded_relative_error(a, 2 * a) == pytest.approx(1 / 3)


def test_layer_pieces_match_torch():
    rng = np.random.default_rng(1)
    x, W, dout = rng.normal(size=(5, 3)), rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    xt, Wt = (torch.tensor(a, requires_grad=True) for a in (x, W))
    bt = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    (xt @ Wt + bt).backward(torch.tensor(dout))
    for ours, theirs in zip(linear_backward(dout, x, W), (xt, Wt, bt), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-12)
    zt = torch.tensor(x, requires_grad=True)
    torch.relu(zt).backward(torch.tensor(x * 0 + 1.5))
    np.testing.assert_allclose(relu_backward(x * 0 + 1.5, x), zt.grad.numpy())
    logits = rng.normal(size=(6, 3)) * 50  # large logits: the stable formulation must hold up
    labels = rng.integers(0, 3, size=6)
    lt = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(lt, torch.tensor(labels))
    tl.backward()
    loss, dlogits = softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), atol=1e-14)
    np.testing.assert_allclose(softmax(logits), torch.softmax(lt, 1).detach().numpy())


def test_to_torch_builds_the_same_network():
    model = _model((8, 4), "tanh", "cross_entropy", 3)
    X, _ = _batch("cross_entropy", 3)
    net = to_torch(model)
    assert [n for n, _ in net.layers.named_children()] == [
        "hidden1",
        "act1",
        "hidden2",
        "act2",
        "output",
    ]
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.tensor(X)).numpy(), model.forward(X), rtol=1e-12)
        out32 = to_torch(model, torch.float32)(torch.tensor(X, dtype=torch.float32))
    np.testing.assert_allclose(out32.numpy(), model.forward(X), rtol=1e-4, atol=1e-5)


# --- the bugs: each one fails the gradient check or the training ---------------------------------


@pytest.mark.parametrize("bug", ["wrong_sign", "missing_batch_mean", "missing_bias_grad"])
def test_gradient_bugs_fail_the_check(bug):
    model = _model((8, 6), "relu", "cross_entropy", 2)
    X, y = _batch("cross_entropy", 2)
    assert gradient_check(model, X, y).passed
    result = gradient_check(model, X, y, bug=bug)
    assert not result.passed and result.max_error > 0.5
    wrong = {k for k, e in result.errors.items() if e > result.tolerance}
    if bug == "missing_bias_grad":
        assert wrong == {"b1", "b2", "b3"}
    else:
        assert wrong == set(model.params)


def test_gradient_ascent_passes_the_check_but_training_goes_uphill(moons):
    model = _model((16, 16), "relu", "cross_entropy", 2)
    X, y = moons.X_train, moons.y_train
    assert gradient_check(model, X[:20], y[:20], bug="gradient_ascent").passed
    uphill = fit(model, X, y, num_epochs=20, lr=0.1, bug="gradient_ascent")
    assert uphill.diverged or uphill.final_loss > 5 * uphill.loss[0]
    correct = fit(_model((16, 16), "relu", "cross_entropy", 2), X, y, num_epochs=20, lr=0.1)
    assert not correct.diverged and correct.final_loss < 0.6 * correct.loss[0]


def test_bugs_hurt_training(moons):
    X, y = moons.X_train, moons.y_train
    final = {}
    for bug in [None, *BUGS]:
        model = _model((16, 16), "relu", "cross_entropy", 2)
        fit(model, X, y, num_epochs=40, lr=0.1, bug=bug)
        final[bug] = accuracy(model, moons.X_test, moons.y_test)
    assert final[None] >= 0.9
    for bug in ("wrong_sign", "gradient_ascent"):  # both climb the loss instead of descending
        assert final[bug] <= 0.6, (bug, final)


def test_missing_batch_mean_is_a_learning_rate_n_times_too_large(moons):
    X, y = moons.X_train, moons.y_train  # 300 rows: batches of 30 are all full
    buggy, scaled = (
        _model((8,), "tanh", "cross_entropy", 2),
        _model((8,), "tanh", "cross_entropy", 2),
    )
    bug_run = fit(buggy, X, y, num_epochs=3, lr=0.01, batch_size=30, bug="missing_batch_mean")
    big_lr_run = fit(scaled, X, y, num_epochs=3, lr=0.3, batch_size=30)
    np.testing.assert_allclose(bug_run.loss, big_lr_run.loss, rtol=1e-9)
    np.testing.assert_allclose(buggy.params["W1"], scaled.params["W1"], rtol=1e-9)


def test_sgd_step_goes_downhill_and_ascent_uphill():
    params = {"W1": np.array([[1.0, 2.0]]), "b1": np.array([0.5])}
    grads = {"W1": np.array([[0.1, -0.2]]), "b1": np.array([1.0])}
    down = sgd_step(params, grads, 0.5)
    np.testing.assert_allclose(down["W1"], [[0.95, 2.1]])
    np.testing.assert_allclose(sgd_step(params, grads, 0.5, bug="gradient_ascent")["b1"], [1.0])
    assert params["W1"][0, 0] == 1.0  # a new dict, the old one untouched


# --- training -----------------------------------------------------------------------------------


def test_training_on_moons_reaches_good_accuracy(moons):
    model = ScratchMLP(ScratchConfig(seed=0))
    result = fit(model, moons.X_train, moons.y_train, num_epochs=100, lr=0.1)
    assert len(result.loss) == len(result.accuracy) == 100
    assert result.final_loss < 0.25 * result.loss[0]
    assert result.accuracy[-1] >= 0.93
    assert accuracy(model, moons.X_test, moons.y_test) >= 0.9


def test_regression_fit_lowers_the_mse():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(200, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    model = ScratchMLP(ScratchConfig(hidden=(16,), out_features=1, activation="tanh", loss="mse"))
    result = fit(model, X, y, num_epochs=60, lr=0.05)
    assert result.accuracy == [] and result.final_loss < 0.1 * result.loss[0]
    assert model.predict(X).shape == (200, 1)


def test_same_seed_same_run(moons):
    runs = []
    for init_seed, shuffle_seed in ((0, 0), (0, 0), (1, 0), (0, 1)):
        model = ScratchMLP(ScratchConfig(seed=init_seed))
        result = fit(model, moons.X_train, moons.y_train, num_epochs=5, seed=shuffle_seed)
        runs.append((result.loss, model.params["W1"].copy()))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0] and runs[0][0] != runs[3][0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScratchConfig(activation="swish"), "unknown activation 'swish'"),
        (lambda: ScratchConfig(loss="hinge"), "unknown loss"),
        (lambda: ScratchConfig(hidden=(4, 0)), "positive integers"),
        (lambda: ScratchMLP().forward(np.zeros((3, 5))), r"expects \(N, 2\)"),
        (lambda: ScratchMLP().loss(np.zeros((3, 2)), np.zeros(4, int)), "one label per row"),
        (lambda: ScratchMLP().loss(np.zeros((3, 2)), np.array([0, 1, 2])), r"integers in \[0, 1\]"),
        (lambda: ScratchMLP().loss(np.zeros((2, 2)), np.array([0.5, 1.0])), "integers"),
        (lambda: ScratchMLP().backward(np.zeros((3, 2))), "call forward before backward"),
        (lambda: ScratchMLP(ScratchConfig(loss="mse")).loss(np.zeros((3, 2)), np.zeros(3)), "fit"),
        (lambda: accuracy(ScratchMLP(ScratchConfig(loss="mse")), np.zeros((1, 2)), [0]), "MSE"),
        (lambda: ScratchMLP().loss_and_grads(np.zeros((2, 2)), [0, 1], bug="typo"), "unknown bug"),
        (
            lambda: sgd_step({"W1": np.ones(2)}, {"W1": np.ones(2)}, 0.0),
            "lr must be a positive number",
        ),
        (
            lambda: sgd_step({"W1": np.ones(2)}, {"W1": np.ones(2)}, -1),
            "lr must be a positive number",
        ),
        (lambda: sgd_step({"W1": np.ones(2)}, {"b1": np.ones(2)}, 0.1), "grads have keys"),
        (lambda: fit(ScratchMLP(), np.zeros((4, 2)), np.zeros(4, int), lr=0), "lr must be"),
        (lambda: fit(ScratchMLP(), np.zeros((4, 2)), np.zeros(4, int), num_epochs=0), "at least"),
    ],
)
def test_bad_input_says_what_is_wrong(make, message):
    with pytest.raises(MaaslabError, match=message):
        make()


def test_gradient_check_rejects_settings_that_check_nothing():
    model = _model((4,), "relu", "cross_entropy", 2)
    X, y = _batch("cross_entropy", 2)
    for kwargs in ({"n_per_param": 0}, {"eps": 0.0}, {"tolerance": -1.0}):
        with pytest.raises(MaaslabError, match="n_per_param must be at least 1"):
            gradient_check(model, X, y, **kwargs)


def test_to_torch_leaves_torch_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    to_torch(_model((8,), "relu", "cross_entropy", 2))
    assert torch.equal(torch.rand(3), expected)


def test_gradient_check_rejects_a_wrongly_shaped_gradient():
    model = _model((4,), "relu", "cross_entropy", 2)
    X, y = _batch("cross_entropy", 2)

    def transposed(params, X, y):
        _, grads = model.loss_and_grads(X, y)
        return {**grads, "W1": grads["W1"].T}

    with pytest.raises(MaaslabError, match="W1 is missing or not of shape"):
        gradient_check(model, X, y, grads_fn=transposed)


# --- exercise checks ----------------------------------------------------------------------------


def _sm(logits):
    e = np.exp(logits)  # deliberately unstable: no max subtraction
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda d, x: d, "returned dout unchanged"),
        (lambda d, x: (x > 0).astype(float), "mask (x > 0) alone"),
        (lambda d, x: d * (x <= 0), "mask is inverted"),
        (lambda d, x: -d * (x > 0), "wrong sign"),
        (lambda d, x: d[:2] * (x[:2] > 0), "shape (2, 5)"),
        (lambda d, x: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_check_relu_backward(answer, message):
    assert check_relu_backward(lambda dout, x: dout * (x > 0)).passed
    assert check_relu_backward(lambda dout, x: np.where(x > 0, dout, 0.0)).passed
    result = check_relu_backward(answer)
    assert not result.passed and message in result.message


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda d, x, W: (d @ W.T, (x.T @ d).T, d.sum(0)), "dW is transposed"),
        (lambda d, x, W: (d @ W.T, x.T @ d, d), "sum dout over the batch axis"),
        (lambda d, x, W: (d @ W.T, x.T @ d, d.mean(0)), "averaged over the batch"),
        (lambda d, x, W: (d @ W.T, x.T @ d / len(x), d.sum(0)), "divided by the batch size"),
        (lambda d, x, W: ((d @ W.T).T, x.T @ d, d.sum(0)), "dx must have x's shape"),
        (lambda d, x, W: (-(d @ W.T), x.T @ d, d.sum(0)), "dx"),
        (lambda d, x, W: (d @ W.T, -(x.T @ d), d.sum(0)), "wrong sign"),
        (lambda d, x, W: (d @ W.T, x.T @ d), "three arrays"),
    ],
)
def test_check_linear_backward(answer, message):
    assert check_linear_backward(linear_backward).passed
    assert check_linear_backward(lambda d, x, W: [d @ W.T, x.T @ d, d.sum(0)]).passed
    result = check_linear_backward(answer)
    assert not result.passed and message in result.message


def _xent_grad(logits, y):
    p = softmax(logits)
    p[np.arange(len(y)), y] -= 1
    return p / len(y)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda z, y: _xent_grad(z, y) * len(y), "N times too large"),
        (lambda z, y: -_xent_grad(z, y), "wrong sign"),
        (lambda z, y: (z - np.eye(z.shape[1])[y]) / len(y), "softmax probabilities"),
        (lambda z, y: (_sm(z) - np.eye(z.shape[1])[y]) / len(y), "subtract each row's max"),
        (lambda z, y: np.zeros_like(z), "largest difference"),
    ],
)
def test_check_softmax_xent_grad(answer, message):
    assert check_softmax_xent_grad(_xent_grad).passed
    result = check_softmax_xent_grad(answer)
    assert not result.passed and message in result.message


def test_check_gradient_check_result():
    model = _model((8, 6), "relu", "cross_entropy", 2)
    X, y = _batch("cross_entropy", 2)
    good = check_gradient_check_result(gradient_check(model, X, y))
    assert good.passed and "agrees with finite differences" in good.message
    bias = check_gradient_check_result(gradient_check(model, X, y, bug="missing_bias_grad"))
    assert not bias.passed and "only the biases disagree" in bias.message
    sign = check_gradient_check_result(gradient_check(model, X, y, bug="wrong_sign"))
    assert not sign.passed and "every parameter disagrees" in sign.message
    loose = check_gradient_check_result(gradient_check(model, X, y, tolerance=10.0))
    assert not loose.passed and "too loose" in loose.message
    partial = GradCheckResult({"W1": 1e-9, "b1": 1e-9, "W2": 0.3, "b2": 1e-9}, 10, 1e-6)
    mid = check_gradient_check_result(partial)
    assert not mid.passed and "['W2']" in mid.message and "into layer 2" in mid.message
    assert "expected the GradCheckResult" in check_gradient_check_result(0.0).message


# --- figures ------------------------------------------------------------------------------------


def test_gradcheck_bars_one_group_per_result():
    model = _model((4,), "relu", "cross_entropy", 2)
    X, y = _batch("cross_entropy", 2)
    results = {bug or "correct": gradient_check(model, X, y, bug=bug) for bug in (None, *BUGS)}
    fig = plots.gradcheck_bars(results)
    assert [t.name for t in fig.data] == list(results)
    assert list(fig.data[0].x) == ["W1", "b1", "W2", "b2"]
    assert fig.layout.yaxis.type == "log" and min(fig.data[0].y) > 0
    assert fig.layout.shapes[0].y0 == 1e-6  # the tolerance line
    assert fig.layout.annotations[0].y == pytest.approx(-6)  # log10 units on a log axis
    assert len(plots.gradcheck_bars(results["correct"]).data) == 1


def test_loss_comparison_draws_diverged_runs_as_gaps():
    fig = plots.loss_comparison({"correct": [0.7, 0.3], "ascent": [0.7, math.inf, math.nan]})
    assert [t.name for t in fig.data] == ["correct", "ascent"]
    assert list(fig.data[1].y) == [0.7, None, None] and list(fig.data[1].x) == [1, 2, 3]
    assert fig.data[1].mode == "lines+markers"  # a short (diverged) run gets markers
    assert plots.loss_comparison({"a": [1.0]}, log_y=True).layout.yaxis.type == "log"
    assert plots.loss_comparison({"a": [1.0]}).layout.yaxis.range is None


def test_loss_comparison_y_max_keeps_a_blown_up_run_off_the_frame():
    curves = {"correct": [0.7, 0.1, 0.01], "ascent": [0.7, 1e50, 1e200]}
    assert list(plots.loss_comparison(curves, y_max=5.0).layout.yaxis.range) == [0.0, 5.0]
    low, high = plots.loss_comparison(curves, log_y=True, y_max=10.0).layout.yaxis.range
    assert low == pytest.approx(-2.1) and high == pytest.approx(1.0)


# --- the notebook's exercise cells: the hand-written answers against the library ---------------

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04_backprop_from_scratch.ipynb"
BREAKS = [  # one way to break each exercise's answer, in notebook order
    ("db = dout.sum(axis=0)", "db = dout"),
    ("return dout * (x > 0)", "return dout"),
    ("return p / len(y)", "return p"),
    ("dz1 = da1 * (1.0 - a1**2)", "dz1 = da1"),
]


def _run_cells(replace: tuple[str, str] | None = None, upto: int = 99) -> list[CheckResult]:
    # Runs the notebook's setup cells and its exercise cells up to number `upto` (0-based);
    # returns each exercise's verdict (the cell's last expression).
    nb = nbformat.read(NOTEBOOK, as_version=4)
    namespace: dict = {}
    verdicts = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or not {"setup", "exercise"} & set(tags):
            continue
        source = cell.source.replace(*replace) if replace else cell.source
        tree = ast.parse(source)
        last = tree.body.pop() if "exercise" in tags else None
        exec(compile(tree, "<cell>", "exec"), namespace)
        if last is not None:
            verdicts.append(eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace))
            if len(verdicts) > upto:
                break
    return verdicts


def test_notebook_exercise_solutions_pass_their_checks():
    verdicts = _run_cells()
    assert len(verdicts) == len(BREAKS) == 4
    assert all(isinstance(v, CheckResult) and v.passed for v in verdicts), verdicts


@pytest.mark.parametrize("index", range(len(BREAKS)))
def test_notebook_exercise_checks_catch_a_broken_answer(index):
    verdicts = _run_cells(BREAKS[index], upto=index)
    assert len(verdicts) == index + 1
    assert all(v.passed for v in verdicts[:index]) and not verdicts[index].passed
