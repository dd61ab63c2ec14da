"""Lessons 01-02 backend: the MSE gradient, gradient descent, mini-batches, schedules, checks.

Oracles: central finite differences and torch autograd for the gradient, sklearn's least squares
for the minimum, torch's nn.Linear + optim.SGD for mini-batch updates, torch's lr schedulers.
"""

import ast
import math

import nbformat
import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression

from maaslab import MaaslabError
from maaslab.exercises.gradient_descent import (
    check_gd_step,
    check_learning_rate,
    check_mse_gradient,
)
from maaslab.exercises.grading import CheckResult
from maaslab.exercises.minibatch_sgd import check_minibatches, check_schedule, check_sgd_config
from maaslab.optimization.descent import (
    gradient_descent,
    hessian_eigenvalues,
    steps_to_reach,
)
from maaslab.optimization.linreg import (
    as_problem,
    closed_form,
    diabetes,
    loss_surface,
    mse_gradient,
    mse_loss,
    numerical_gradient,
    relative_error,
)
from maaslab.optimization.minibatch import (
    Schedule,
    SGDConfig,
    learning_rate,
    minibatch_gd,
    minibatch_indices,
)
from maaslab.paths import ROOT


@pytest.fixture(scope="module")
def problem():
    data = diabetes()
    return as_problem(data.X_train, data.y_train)


def _hand_gradient(theta, X, y):
    r = X @ theta[:-1] + theta[-1] - y
    return np.append(2 / len(y) * X.T @ r, 2 / len(y) * r.sum())


# --- the gradient --------------------------------------------------------------------------------


def test_gradient_matches_central_differences(problem):
    X, y = problem
    theta = np.random.default_rng(0).normal(scale=20, size=X.shape[1] + 1)
    numeric = numerical_gradient(lambda t: mse_loss(t, X, y), theta)
    assert relative_error(mse_gradient(theta, X, y), numeric) < 1e-8


def test_gradient_matches_torch_autograd(problem):
    X, y = problem
    theta = np.random.default_rng(1).normal(scale=20, size=X.shape[1] + 1)
    t = torch.tensor(theta, requires_grad=True)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss = torch.mean((Xt @ t[:-1] + t[-1] - yt) ** 2)
    loss.backward()
    assert math.isclose(loss.item(), mse_loss(theta, X, y), rel_tol=1e-12)
    np.testing.assert_allclose(mse_gradient(theta, X, y), t.grad.numpy(), rtol=1e-10)


def test_relative_error_is_scale_free():
    a = np.array([1.0, 2.0, 3.0])
    assert relative_error(a, a) == 0
    assert math.isclose(relative_error(1e6 * a, 1e6 * a * (1 + 1e-9)), 1e-9, rel_tol=1e-3)


def test_closed_form_matches_sklearn(problem):
    X, y = problem
    model = LinearRegression().fit(X, y)
    np.testing.assert_allclose(closed_form(X, y), [*model.coef_, model.intercept_], rtol=1e-8)


# --- full-batch descent --------------------------------------------------------------------------


def test_gradient_descent_converges_to_the_closed_form(problem):
    X, y = problem
    run = gradient_descent(X, y, lr=0.2, steps=6000)
    assert run.diverged_at is None and "fell" in run.message
    np.testing.assert_allclose(
        run.theta, np.linalg.lstsq(np.c_[X, np.ones(len(y))], y)[0], atol=1e-5
    )
    assert np.all(np.diff(run.losses) <= 1e-9)  # below 2 / lambda_max the loss never rises
    assert run.thetas.shape == (6001, 11) and run.lrs.shape == (6000,)


def test_divergence_is_detected_and_stops_the_run(problem):
    X, y = problem
    edge = 2 / hessian_eigenvalues(X)[-1]
    run = gradient_descent(X, y, lr=1.3 * edge, steps=500)
    assert run.diverged_at is not None and run.steps == run.diverged_at < 500
    assert "diverged" in run.message and np.all(np.isfinite(run.thetas))
    just_below = gradient_descent(X, y, lr=0.98 * edge, steps=500)
    assert just_below.diverged_at is None


def test_a_growing_loss_is_reported_before_it_explodes():
    data = diabetes("bmi")
    run = gradient_descent(data.X_train, data.y_train, lr=1.02, steps=20)  # 2 / lambda = 1
    assert run.diverged_at is None and run.message.startswith("diverging")


def test_a_bouncing_run_says_it_is_stuck():
    data = diabetes("bmi")
    run = gradient_descent(
        data.X_train, data.y_train, lr=1.0, steps=20
    )  # theta -> 2 theta* - theta
    assert run.message.startswith("stuck")
    np.testing.assert_allclose(run.thetas[2], run.thetas[0], atol=1e-3)


def test_free_parameters_move_and_the_rest_stay(problem):
    X, y = problem
    start = closed_form(X, y)
    start[[4, 5]] = 0.0
    run = gradient_descent(X, y, lr=0.45, steps=300, theta0=start, free=(4, 5))
    fixed = np.delete(run.thetas, [4, 5], axis=1)
    assert np.all(fixed == np.delete(start, [4, 5]))
    np.testing.assert_allclose(run.theta, closed_form(X, y), atol=1e-6)


def test_steps_to_reach(problem):
    X, y = problem
    run = gradient_descent(X, y, lr=0.2, steps=30)
    target = 1.01 * mse_loss(closed_form(X, y), X, y)
    k = steps_to_reach(run, target)
    assert run.losses[k] <= target < run.losses[k - 1]
    assert steps_to_reach(run, 0.0) is None


# --- mini-batches --------------------------------------------------------------------------------


def test_full_batch_minibatch_equals_gradient_descent_exactly(problem):
    X, y = problem
    full = gradient_descent(X, y, lr=0.1, steps=25)
    mini = minibatch_gd(X, y, SGDConfig(lr=0.1, batch_size=len(y), epochs=25, seed=3))
    assert np.array_equal(full.thetas, mini.thetas) and np.array_equal(full.losses, mini.losses)
    assert mini.steps_per_epoch == 1


def test_same_seed_same_path_other_seed_other_path(problem):
    X, y = problem
    cfg = SGDConfig(lr=0.02, batch_size=16, epochs=3, seed=5)
    a, b = minibatch_gd(X, y, cfg), minibatch_gd(X, y, cfg)
    c = minibatch_gd(X, y, SGDConfig(lr=0.02, batch_size=16, epochs=3, seed=6))
    assert np.array_equal(a.thetas, b.thetas)
    assert not np.allclose(a.thetas[-1], c.thetas[-1])
    assert a.steps == 3 * math.ceil(len(y) / 16) and a.epochs[-1] == 3.0


def test_minibatch_updates_match_torch_sgd(problem):
    X, y = problem
    cfg = SGDConfig(lr=0.03, batch_size=50, epochs=2, seed=11)
    ours = minibatch_gd(X, y, cfg)
    rng = np.random.default_rng(cfg.seed)  # replay the same batch order for torch
    model = torch.nn.Linear(X.shape[1], 1, dtype=torch.float64)
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    step = 0
    for _ in range(cfg.epochs):
        for idx in minibatch_indices(len(y), cfg.batch_size, rng):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(Xt[idx]).squeeze(1), yt[idx]).backward()
            opt.step()
            step += 1
            theta = np.append(model.weight.detach().numpy().ravel(), model.bias.item())
            np.testing.assert_allclose(ours.thetas[step], theta, rtol=1e-10, atol=1e-10)
    assert step == ours.steps


def test_minibatch_indices_partition_the_data():
    batches = minibatch_indices(10, 3, np.random.default_rng(0))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    ordered = minibatch_indices(10, 4, np.random.default_rng(0), shuffle=False)
    assert np.concatenate(ordered).tolist() == list(range(10))


def test_sgd_noise_floor_shrinks_with_a_decaying_schedule(problem):
    X, y = problem
    best = mse_loss(closed_form(X, y), X, y)
    constant = minibatch_gd(X, y, SGDConfig(lr=0.01, batch_size=1, epochs=5))
    cosine = minibatch_gd(
        X, y, SGDConfig(lr=0.01, batch_size=1, epochs=5, schedule=Schedule("cosine"))
    )
    assert cosine.final_loss - best < 0.5 * (constant.final_loss - best)
    assert cosine.lrs[0] == 0.01 and cosine.lrs[-1] < 1e-5


# --- schedules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "t", "expected"),
    [
        (Schedule(), 7.5, 0.1),
        (Schedule("step", gamma=0.5, every=5), 4.99, 0.1),
        (Schedule("step", gamma=0.5, every=5), 10.0, 0.025),
        (Schedule("exponential", gamma=0.5, every=5), 2.5, 0.1 * 0.5**0.5),
        (Schedule("inverse_time", decay=0.5), 4.0, 0.1 / 3),
        (Schedule("cosine"), 10.0, 0.05),
        (Schedule("cosine", min_fraction=0.1), 20.0, 0.01),
    ],
)
def test_schedules_give_the_documented_values(schedule, t, expected):
    assert math.isclose(learning_rate(schedule, 0.1, t, epochs=20), expected, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("schedule", "make"),
    [
        (
            Schedule("step", gamma=0.3, every=4),
            lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.3),
        ),
        (
            Schedule("exponential", gamma=0.8, every=1),
            lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8),
        ),
        (
            Schedule("cosine", min_fraction=0.2),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=0.02),
        ),
        (
            Schedule("inverse_time", decay=0.7),
            lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + 0.7 * e)),
        ),
    ],
)
def test_schedules_match_torch_schedulers_at_whole_epochs(schedule, make):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = make(opt)
    for epoch in range(13):
        assert math.isclose(
            opt.param_groups[0]["lr"], learning_rate(schedule, 0.1, epoch, 12), rel_tol=1e-9
        ), epoch
        opt.step()
        scheduler.step()


# --- exercise checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda t, X, y: -_hand_gradient(t, X, y), "wrong sign"),
        (lambda t, X, y: _hand_gradient(t, X, y) / 2, "factor 2 is missing"),
        (lambda t, X, y: _hand_gradient(t, X, y) * len(y) / 2, "factor 2/n is missing"),
        (lambda t, X, y: _hand_gradient(t, X, y) * len(y), "divide the sum by n"),
        (lambda t, X, y: _hand_gradient(t, X, y)[:-1], "append dJ/db"),
        (lambda t, X, y: np.append(_hand_gradient(t, X, y)[:-1], 0.0), "dJ/db is 0"),
        (lambda t, X, y: _hand_gradient(np.append(t[:-1], 0.0), X, y), "leaves out the bias"),
        (lambda t, X, y: _hand_gradient(t, X, y) + 1, "relative error"),
        (lambda t, X, y: np.zeros((2, 2)), "shape (2, 2)"),
        (lambda t, X, y: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_check_gradient_names_the_mistake(fn, message):
    result = check_mse_gradient(fn)
    assert not result.passed and message in result.message, result.message


def test_check_gradient_passes_a_right_answer():
    assert check_mse_gradient(_hand_gradient).passed
    assert check_mse_gradient(lambda t, X, y: mse_gradient(t, X, y)).passed


@pytest.mark.parametrize(
    ("fn", "ok", "message"),
    [
        (lambda t, X, y, lr: t - lr * _hand_gradient(t, X, y), True, "theta - lr * grad"),
        (lambda t, X, y, lr: t + lr * _hand_gradient(t, X, y), False, "uphill"),
        (lambda t, X, y, lr: t - _hand_gradient(t, X, y), False, "ignores lr"),
        (lambda t, X, y, lr: -lr * _hand_gradient(t, X, y), False, "the change, not the new"),
        (lambda t, X, y, lr: t, False, "did not change"),
        (lambda t, X, y, lr: t[:-1], False, "shape"),
    ],
)
def test_check_gd_step(fn, ok, message):
    result = check_gd_step(fn)
    assert result.passed is ok and message in result.message, result.message


@pytest.mark.parametrize(
    ("lr", "ok", "message"),
    [
        (0.2, True, "within 1%"),
        (0.01, False, "too small"),
        (0.15, False, "too small"),
        (0.23, False, "overshoots"),
        (0.3, False, "diverges"),
        (0.0, False, "above 0"),
        (float("nan"), False, "above 0"),
    ],
)
def test_check_learning_rate(lr, ok, message):
    result = check_learning_rate(lr)
    assert result.passed is ok and message in result.message, result.message


def _batches(n, size, rng):
    order = rng.permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


@pytest.mark.parametrize(
    ("fn", "ok", "message"),
    [
        (_batches, True, "sizes [3, 3, 3, 1]"),
        (lambda n, s, rng: _batches(n, s, rng)[:-1], False, "short last batch was dropped"),
        (lambda n, s, rng: [rng.integers(0, n, s) for _ in range(0, n, s)], False, "twice"),
        (
            lambda n, s, rng: [np.arange(n)[i : i + s] for i in range(0, n, s)],
            False,
            "not shuffled",
        ),
        (lambda n, s, rng: _batches(n, s, np.random.default_rng()), False, "same seed"),
        (lambda n, s, rng: [rng.permutation(n)], False, "batch sizes [10]"),
    ],
)
def test_check_minibatches(fn, ok, message):
    result = check_minibatches(fn)
    assert result.passed is ok and message in result.message, result.message


@pytest.mark.parametrize(
    ("fn", "ok", "message"),
    [
        (lambda t: 0.1 * 0.5 ** (t // 5), True, "matches"),
        (lambda t: 0.1 * 0.5 ** ((t + 1) // 5), False, "one epoch early"),
        (lambda t: 0.1 * 0.5 ** (max(t - 1, 0) // 5), False, "one epoch late"),
        (lambda t: 0.1, False, "never changes"),
        (lambda t: 0.2 * 0.5 ** (t // 5), False, "starts at lr = 0.1"),
        (lambda t: 0.1 * 0.5 ** (t // 4), False, "largest difference"),
    ],
)
def test_check_schedule_step(fn, ok, message):
    result = check_schedule(fn, Schedule("step", gamma=0.5, every=5))
    assert result.passed is ok and message in result.message, result.message


def test_check_schedule_cosine_by_name():
    good = lambda t: 0.05 * (1 + math.cos(math.pi * t / 20))  # noqa: E731
    assert check_schedule(good, "cosine").passed
    assert not check_schedule(lambda t: 1 / 0, "cosine").passed


@pytest.mark.parametrize(
    ("cfg", "ok", "message"),
    [
        (SGDConfig(lr=0.01, batch_size=1, epochs=10, schedule=Schedule("cosine")), True, "every"),
        (SGDConfig(lr=0.001, batch_size=1, epochs=10), False, "constant lr"),
        (SGDConfig(lr=0.5, batch_size=1, epochs=10), False, "diverge"),
        (
            SGDConfig(
                lr=0.05, batch_size=1, epochs=10, schedule=Schedule("inverse_time", decay=0.1)
            ),
            False,
            "still high at the end",
        ),
        (
            SGDConfig(
                lr=0.001,
                batch_size=1,
                epochs=10,
                schedule=Schedule("exponential", gamma=0.1, every=1),
            ),
            False,
            "shrink before",
        ),
        (SGDConfig(lr=0.05, batch_size=8, epochs=10), False, "batch_size=1"),
    ],
)
def test_check_sgd_config(cfg, ok, message):
    result = check_sgd_config(cfg)
    assert result.passed is ok and message in result.message, result.message


# --- the loss surface and bad input --------------------------------------------------------------


def test_loss_surface_values_and_range():
    data = diabetes("bmi")
    X, y = as_problem(data.X_train, data.y_train)
    s = loss_surface(
        X, y, include=[np.zeros(2)], resolution=21, square=True, feature_names=data.feature_names
    )
    assert s.names == ("w[bmi]", "b") and s.loss.shape == (21, 21)
    assert s.a[0] < 0 < s.optimum[0] < s.a[-1] and s.b[0] < 0 < s.optimum[1] < s.b[-1]
    assert math.isclose(s.a[-1] - s.a[0], s.b[-1] - s.b[0])
    i, j = 3, 17
    assert math.isclose(s.loss[j, i], mse_loss(np.array([s.a[i], s.b[j]]), X, y), rel_tol=1e-12)
    assert s.loss.min() >= s.optimum_loss - 1e-9


def test_loss_surface_holds_other_parameters_at_the_optimum(problem):
    X, y = problem
    s = loss_surface(X, y, (4, 5), resolution=11)
    theta = s.optimum.copy()
    theta[[4, 5]] = s.a[2], s.b[7]
    assert math.isclose(s.loss[7, 2], mse_loss(theta, X, y), rel_tol=1e-12)
    with pytest.raises(MaaslabError, match="two different entries"):
        loss_surface(X, y, (4, 4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda X, y: gradient_descent(X, y, lr=0.0, steps=5), "above 0"),
        (lambda X, y: gradient_descent(X, y, lr=float("nan"), steps=5), "above 0"),
        (lambda X, y: gradient_descent(X, y, lr=0.1, steps=0), "steps must be at least 1"),
        (lambda X, y: gradient_descent(X, y, lr=0.1, steps=5, theta0=np.zeros(3)), "theta0"),
        (lambda X, y: gradient_descent(X, y, lr=0.1, steps=5, free=(99,)), "free"),
        (lambda X, y: gradient_descent(X, y[:-1], lr=0.1, steps=5), "X must be"),
        (lambda X, y: gradient_descent(np.where(X > 2, np.nan, X), y, lr=0.1, steps=5), "NaN"),
        (lambda X, y: minibatch_gd(X, y, SGDConfig(batch_size=len(y) + 1)), "between 1 and n"),
        (lambda X, y: SGDConfig(batch_size=0), "at least 1"),
        (lambda X, y: SGDConfig(epochs=0), "epochs must be at least 1"),
        (lambda X, y: SGDConfig(lr=-1), "above 0"),
        (lambda X, y: Schedule("warmup"), "unknown schedule"),
        (lambda X, y: Schedule("step", gamma=1.5), "gamma"),
        (lambda X, y: diabetes("height"), "unknown diabetes feature"),
        (lambda X, y: minibatch_indices(5, 6, np.random.default_rng(0)), "between 1 and n"),
    ],
)
def test_bad_input_says_what_is_wrong(problem, call, message):
    X, y = problem
    with pytest.raises(MaaslabError, match=message):
        call(X, y)


@pytest.mark.parametrize("name", ["01_gradient_descent", "02_minibatch_sgd"])
def test_notebook_answers_pass_their_checks(name):
    """The hand-written answers in a notebook agree with the library: every check passes."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    namespace: dict = {}
    exec(sources[0], namespace)  # the setup cell: imports and seeding
    answers = [source for source in sources if "### BEGIN SOLUTION" in source]
    assert len(answers) >= 3
    for source in answers:
        tree = ast.parse(source)
        last = tree.body.pop()  # the check call, the cell's last expression
        exec(compile(tree, name, "exec"), namespace)
        result = eval(compile(ast.Expression(last.value), name, "eval"), namespace)
        assert isinstance(result, CheckResult) and result.passed, str(result)
