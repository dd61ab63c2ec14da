"""Oracle tests: NumPy optimizers vs torch.optim step for step, surfaces vs autograd, races."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from maaslab.errors import MaaslabError
from maaslab.exercises.optimizers import (
    check_adam_step,
    check_momentum_step,
    check_rmsprop_step,
    check_rosenbrock_gradient,
)
from maaslab.optimization.optim import (
    HAND_OPTIMIZERS,
    SURFACES,
    Adam,
    Momentum,
    OptimizerConfig,
    RaceConfig,
    RMSprop,
    default_optimizers,
    get_surface,
    make_hand_optimizer,
    race,
    torch_optimizer,
)

# Non-default hyperparameters too, so a setting that is not passed through to torch shows up.
CONFIGS = [
    OptimizerConfig("gd", lr=0.05),
    OptimizerConfig("momentum", lr=0.02),
    OptimizerConfig("momentum", lr=0.02, momentum=0.5),
    OptimizerConfig("nesterov", lr=0.02),
    OptimizerConfig("rmsprop", lr=0.01),
    OptimizerConfig("rmsprop", lr=0.01, alpha=0.9, eps=0.1),
    OptimizerConfig("adam", lr=0.05),
    OptimizerConfig("adam", lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6),
    OptimizerConfig("adam", lr=0.05, eps=0.1),  # a large eps, so where it is added shows
]


def _least_squares():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=30)
    return X, y


def _lockstep(cfg, w0, numpy_grad, torch_loss, steps):
    # Run ours and torch's from the same start; return the largest difference along the way.
    opt = make_hand_optimizer(cfg)
    w = w0.copy()
    param = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    topt = torch_optimizer(cfg, [param])
    worst = 0.0
    for _ in range(steps):
        w = opt.step(w, numpy_grad(w))
        topt.zero_grad()
        torch_loss(param).backward()
        topt.step()
        worst = max(worst, float(np.abs(w - param.detach().numpy()).max()))
    return worst, w


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.label}")
def test_matches_torch_on_least_squares(cfg, weight_decay):
    X, y = _least_squares()
    cfg = OptimizerConfig(**{**cfg.__dict__, "weight_decay": weight_decay})
    Xt, yt = torch.tensor(X), torch.tensor(y)
    worst, w = _lockstep(
        cfg,
        np.zeros(3),
        lambda w: 2 * X.T @ (X @ w - y) / len(y),
        lambda p: ((Xt @ p - yt) ** 2).mean(),
        steps=60,
    )
    assert worst <= 1e-6
    assert np.abs(w).sum() > 0.1  # it actually moved, so the comparison means something


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.label}")
def test_matches_torch_on_a_surface(cfg, weight_decay):
    surface = get_surface("beale")
    cfg = OptimizerConfig(**{**cfg.__dict__, "lr": cfg.lr / 20, "weight_decay": weight_decay})
    worst, w = _lockstep(cfg, np.array(surface.start), surface.grad, surface.torch_value, 80)
    assert worst <= 1e-6
    assert np.abs(w - surface.start).max() > 1e-3


@pytest.mark.parametrize("name", list(SURFACES))
def test_surface_gradient_matches_autograd(name):
    surface = SURFACES[name]
    rng = np.random.default_rng(1)
    lo = np.array([surface.x_range[0], surface.y_range[0]])
    hi = np.array([surface.x_range[1], surface.y_range[1]])
    points = rng.uniform(lo, hi, size=(200, 2))
    xy = torch.tensor(points, requires_grad=True)
    surface.torch_value(xy).sum().backward()
    np.testing.assert_allclose(surface.grad(points), xy.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(surface.value(points), surface.torch_value(torch.tensor(points)))
    assert surface.value(points).shape == (200,)
    assert surface.grad(points[0]).shape == (2,)


def test_surface_minima_are_stationary_and_lowest():
    for surface in SURFACES.values():
        if surface.minimum is None:
            continue
        assert np.allclose(surface.grad(np.array(surface.minimum)), 0)
        xs = np.random.default_rng(2).uniform(-2, 2, size=(500, 2))
        assert surface.value(xs).min() >= surface.min_value


def test_optimizer_state_and_reset():
    opt = Adam(OptimizerConfig("adam", lr=0.1))
    p = np.array([1.0, 2.0])
    first = opt.step(p, np.array([0.5, -1.0]))
    # Adam's first step has size lr in every coordinate, whatever the gradient's size.
    np.testing.assert_allclose(first, p - 0.1 * np.array([1.0, -1.0]), rtol=1e-6)
    opt.step(first, np.array([0.5, -1.0]))
    opt.reset()
    np.testing.assert_array_equal(opt.step(p, np.array([0.5, -1.0])), first)
    assert p.tolist() == [1.0, 2.0]  # inputs untouched


def test_torch_optimizer_kinds():
    p = [torch.zeros(2, requires_grad=True)]
    assert isinstance(torch_optimizer(OptimizerConfig("gd"), p), torch.optim.SGD)
    nesterov = torch_optimizer(OptimizerConfig("nesterov"), p)
    assert nesterov.defaults["nesterov"] and nesterov.defaults["momentum"] == 0.9
    assert isinstance(torch_optimizer(OptimizerConfig("rmsprop"), p), torch.optim.RMSprop)
    assert isinstance(torch_optimizer(OptimizerConfig("adam"), p), torch.optim.Adam)
    assert OptimizerConfig("adam", lr=0.01).label == "Adam (lr 0.01)"
    assert OptimizerConfig("rmsprop", lr=0.0005).label == "RMSprop (lr 0.0005)"


def test_race_records_paths():
    result = race(RaceConfig(surface="rosenbrock", steps=50))
    assert [p.config.name for p in result.paths] == list(HAND_OPTIMIZERS)
    for path in result.paths:
        assert path.diverged_at is None
        assert path.xy.shape == (51, 2) and path.loss.shape == (51,)
        assert tuple(path.xy[0]) == result.surface.start
        np.testing.assert_allclose(path.loss, result.surface.value(path.xy))
        assert path.final_loss == path.loss[-1] < path.loss[0]
        assert path.label == path.config.label


def test_race_detects_divergence_at_the_right_step():
    # GD on 0.5 (x^2 + 100 y^2) with lr 0.05 multiplies y by 1 - 0.05 * 100 = -4 each step:
    # |y| = 1.5 * 4^t first exceeds 1e6 at t = 10.
    cfg = RaceConfig("quadratic", (OptimizerConfig("gd", lr=0.05), "adam"), (-5, 1.5), 100)
    gd, adam = race(cfg).paths
    assert gd.diverged_at == 10
    assert gd.xy.shape == (10, 2) and np.all(np.abs(gd.xy) <= 1e6)
    assert np.all(np.isfinite(gd.loss))
    assert adam.diverged_at is None and adam.xy.shape == (101, 2)


def test_race_stops_on_overflow():
    cfg = RaceConfig("rosenbrock", (OptimizerConfig("gd", lr=1.0),), steps=100)
    (path,) = race(cfg).paths
    assert path.diverged_at is not None and path.diverged_at <= 5
    assert np.all(np.isfinite(path.xy))


def test_race_stories_the_lesson_tells():
    quad = {p.config.name: p for p in race(RaceConfig("quadratic")).paths}
    assert quad["gd"].final_loss > 100 * max(quad["momentum"].final_loss, quad["adam"].final_loss)
    saddle = {p.config.name: p for p in race(RaceConfig("saddle", steps=100)).paths}
    assert abs(saddle["gd"].xy[-1, 1]) < 0.1  # GD still sits near the saddle
    assert abs(saddle["adam"].xy[-1, 1]) > 1  # Adam's normalised steps walk off it
    assert race(RaceConfig("saddle", steps=200)).paths[1].diverged_at is not None  # momentum
    ridge = race(RaceConfig("saddle", start=(-1.5, 0.0), steps=200))
    assert all(p.xy[-1, 1] == 0 and p.diverged_at is None for p in ridge.paths)
    rosen = {p.config.name: p for p in race(RaceConfig("rosenbrock", steps=500)).paths}
    assert rosen["adam"].final_loss < 0.1 < rosen["gd"].final_loss
    wall = {p.config.name: p for p in race(RaceConfig("beale", start=(2, 2), steps=300)).paths}
    assert all(wall[n].diverged_at is not None for n in ("gd", "momentum", "nesterov"))
    assert all(wall[n].final_loss < 0.5 for n in ("rmsprop", "adam"))  # bounded steps survive
    for name in SURFACES:
        assert [c.name for c in default_optimizers(name)] == list(HAND_OPTIMIZERS)
        finished = race(RaceConfig(name, steps=SURFACES[name].steps)).paths
        assert name == "saddle" or all(p.diverged_at is None for p in finished)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: OptimizerConfig("sgd2"), "unknown optimizer 'sgd2'"),
        (lambda: OptimizerConfig(lr=0), "learning rate must be a positive number"),
        (lambda: OptimizerConfig(lr=-0.1), "learning rate"),
        (lambda: OptimizerConfig(lr=math.nan), "learning rate"),
        (lambda: OptimizerConfig(lr=math.inf), "learning rate"),
        (lambda: OptimizerConfig(lr="0.1"), "learning rate"),
        (lambda: OptimizerConfig(beta1=1.0), "beta1 must be in [0, 1)"),
        (lambda: OptimizerConfig(momentum=-0.1), "momentum must be in [0, 1)"),
        (lambda: OptimizerConfig("nesterov", momentum=0.0), "nesterov needs momentum > 0"),
        (lambda: OptimizerConfig(eps=-1.0), "eps must be a number >= 0"),
        (lambda: OptimizerConfig(weight_decay=math.nan), "weight_decay"),
        (lambda: RaceConfig(steps=0), "steps must be between 1 and 5000, got 0"),
        (lambda: RaceConfig(steps=5001), "steps must be between 1 and 5000"),
        (lambda: RaceConfig(steps=2.5), "steps must be a whole number"),
        (lambda: RaceConfig(steps=True), "steps must be a whole number"),
        (lambda: RaceConfig(start=(math.nan, 0.0)), "start must be two finite numbers"),
        (lambda: RaceConfig(start=(0.0, math.inf)), "start must be two finite numbers"),
        (lambda: RaceConfig(start=(1.0,)), "start must be two finite numbers"),
        (lambda: RaceConfig(start=(1.0, 2.0, 3.0)), "start must be two finite numbers"),
        (lambda: RaceConfig(start="ab"), "start must be two finite numbers"),
        (lambda: RaceConfig(surface="nope"), "unknown surface 'nope': choose one of quadratic"),
        (lambda: RaceConfig(optimizers=()), "optimizers must be a non-empty list"),
        (lambda: RaceConfig(optimizers=(3,)), "optimizers must be a non-empty list"),
        (lambda: RaceConfig(optimizers=("adamw",)), "unknown optimizer 'adamw'"),
        (lambda: race("rosenbrock"), "race needs a RaceConfig"),
        (lambda: get_surface("Rosenbrock"), "choose one of quadratic, rosenbrock, beale, saddle"),
    ],
)
def test_bad_input_says_what_is_wrong(make, message):
    with pytest.raises(MaaslabError) as info:
        make()
    assert message in str(info.value)


def test_race_summary():
    result = race(RaceConfig("rosenbrock", ("adam", OptimizerConfig("gd", lr=1.0)), steps=300))
    adam, gd = result.summary()
    assert adam["optimizer"] == "Adam (lr 0.1)" and adam["diverged at"] is None
    assert adam["final loss"] == result.paths[0].final_loss
    assert adam["distance to minimum"] == pytest.approx(np.hypot(adam["x"] - 1, adam["y"] - 1))
    assert gd["diverged at"] is not None
    assert race(RaceConfig("saddle", steps=5)).summary()[0]["distance to minimum"] is None


def test_race_config_normalises_inputs():
    cfg = RaceConfig("beale", optimizers=["gd", "adam"], start=[np.float32(1), 2])
    assert cfg.start == (1.0, 2.0)
    assert [o.lr for o in cfg.optimizers] == [
        get_surface("beale").lr_for(n) for n in ("gd", "adam")
    ]
    assert RaceConfig(steps=np.int64(7)).steps == 7


# ---- exercise checks: right answers pass, known mistakes fail with a message that names them


def hand_adam(params, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return params - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def library_adam(params, grad, m, v, t, lr, beta1, beta2, eps):
    # The check's reference must agree with maaslab.optimization.optim.Adam (tied to torch above).
    opt = Adam(OptimizerConfig("adam", lr=lr, beta1=beta1, beta2=beta2, eps=eps))
    opt.t, opt.m, opt.v = t - 1, m, v
    return opt.step(params, grad), opt.m, opt.v


def adam_eps_inside(params, grad, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad**2
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return params - lr * m_hat / np.sqrt(v_hat + eps), m, v


def test_check_adam_passes_right_answers():
    for fn in (hand_adam, library_adam):
        result = check_adam_step(fn)
        assert result.passed, result.message


@pytest.mark.parametrize(
    ("wrong", "words"),
    [
        (
            lambda p, g, m, v, t, lr, b1, b2, eps: hand_adam(p, g, m, v, 10**9, lr, b1, b2, eps),
            "without bias correction",
        ),
        (adam_eps_inside, "eps is inside the square root"),
        (
            lambda p, g, m, v, t, lr, b1, b2, eps: hand_adam(p, g, m, v, t, lr, b2, b1, eps),
            "swapped",
        ),
        (
            lambda p, g, m, v, t, lr, b1, b2, eps: hand_adam(p, -g, m, v, t, lr, b1, b2, eps),
            "step 1 gives params",
        ),
        (
            lambda p, g, m, v, t, lr, b1, b2, eps: hand_adam(
                p, g, 0 * m, 0 * v, 1, lr, b1, b2, eps
            ),
            "Step 1 is right, so check the state",
        ),
        (lambda p, g, m, v, t, lr, b1, b2, eps: p, "return a tuple of 3 arrays"),
        (lambda p, g, m, v: (p, m, v), "TypeError"),
    ],
)
def test_check_adam_names_the_mistake(wrong, words):
    result = check_adam_step(wrong)
    assert not result.passed
    assert words in result.message


def test_check_momentum():
    def hand(params, grad, velocity, lr, momentum):
        velocity = momentum * velocity + grad
        return params - lr * velocity, velocity

    def library(params, grad, velocity, lr, momentum):
        opt = Momentum(OptimizerConfig("momentum", lr=lr, momentum=momentum))
        opt.velocity = velocity
        return opt.step(params, grad), opt.velocity

    def dampened(params, grad, velocity, lr, momentum):
        velocity = momentum * velocity + (1 - momentum) * grad
        return params - lr * velocity, velocity

    def old_velocity(params, grad, velocity, lr, momentum):
        return params - lr * velocity, momentum * velocity + grad

    assert check_momentum_step(hand).passed and check_momentum_step(library).passed
    assert "average" in check_momentum_step(dampened).message
    assert "old velocity" in check_momentum_step(old_velocity).message
    assert not check_momentum_step(lambda p, g, v, lr, mu: (p + lr * g, v)).passed


def test_check_rmsprop():
    def hand(params, grad, square_avg, lr, alpha, eps):
        square_avg = alpha * square_avg + (1 - alpha) * grad**2
        return params - lr * grad / (np.sqrt(square_avg) + eps), square_avg

    def library(params, grad, square_avg, lr, alpha, eps):
        opt = RMSprop(OptimizerConfig("rmsprop", lr=lr, alpha=alpha, eps=eps))
        opt.square_avg = square_avg
        return opt.step(params, grad), opt.square_avg

    def eps_inside(params, grad, square_avg, lr, alpha, eps):
        square_avg = alpha * square_avg + (1 - alpha) * grad**2
        return params - lr * grad / np.sqrt(square_avg + eps), square_avg

    assert check_rmsprop_step(hand).passed and check_rmsprop_step(library).passed
    result = check_rmsprop_step(eps_inside)
    assert not result.passed and "inside the square root" in result.message


def test_check_rosenbrock_gradient():
    def hand(x, y):
        return -2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)

    def wrong_dx(x, y):
        return 2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)

    assert check_rosenbrock_gradient(hand).passed
    result = check_rosenbrock_gradient(wrong_dx)
    assert not result.passed and "df/dx is wrong" in result.message
    assert "df/dy" not in result.message.split("is wrong")[0]
    both = check_rosenbrock_gradient(lambda x, y: (0.0, 0.0))
    assert "df/dx and df/dy is wrong" in both.message or "df/dx and df/dy" in both.message
    assert "failed" in check_rosenbrock_gradient(lambda x: x).message


def test_notebook_hand_written_rules_pass_their_checks():
    # The lesson's point is writing these by hand; the notebook's versions must match the library.
    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "03_optimizers.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    checks = {
        "adam_step": check_adam_step,
        "momentum_step": check_momentum_step,
        "rosenbrock_gradient": check_rosenbrock_gradient,
        "rmsprop_step": check_rmsprop_step,
    }
    for name, check in checks.items():
        (source,) = [s for s in sources if f"def {name}(" in s]
        namespace = {"np": np}
        exec(source.split("### END SOLUTION")[0], namespace)  # the def, without its check
        result = check(namespace[name])
        assert result.passed, f"{name}: {result.message}"
