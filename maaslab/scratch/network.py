"""The scratch network: layers, losses, an MLP with a hand-written backward pass, SGD and fit.

Shapes follow CS231n: inputs x (N, D), weights W (D, M), biases b (M,), outputs x @ W + b (N, M).
Everything is float64, so finite differences and autograd agree to ~1e-9.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from maaslab.errors import MaaslabError

ACTIVATIONS = ("relu", "tanh", "sigmoid")
LOSSES = ("cross_entropy", "mse")
# The first three break the gradient (a gradient check catches them); the last one only breaks
# the update, so its gradients check out and only the training curve gives it away.
BUGS = {
    "wrong_sign": "the loss gradient is y - p instead of p - y",
    "missing_batch_mean": "the loss gradient is not divided by the batch size",
    "missing_bias_grad": "the bias gradients are left at zero",
    "gradient_ascent": "the SGD step adds the gradient instead of subtracting it",
}
Params = dict[str, np.ndarray]  # "W1", "b1", "W2", ...: one weight matrix and bias per layer


# --- layers: forward and backward ---------------------------------------------------------------


def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D) @ (D, M) + (M,) -> (N, M)."""
    return x @ W + b


def linear_backward(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dW, db) of a linear layer, given dout = dL/d(output) of shape (N, M)."""
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)  # (N, D), (D, M), (M,)


def activation_forward(name: str, z: np.ndarray) -> np.ndarray:
    """Apply relu, tanh or sigmoid elementwise."""
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow in exp(-z)


def activation_backward(name: str, dout: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dL/dz from dL/da, where a = activation(z); tanh and sigmoid reuse the cached output a."""
    if name == "relu":
        return relu_backward(dout, z)
    if name == "tanh":
        return dout * (1.0 - a**2)
    return dout * a * (1.0 - a)


def relu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Pass the gradient where the input was positive, zero elsewhere."""
    return dout * (x > 0)


# --- losses: value and gradient with respect to the network output -----------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax; subtracting the row max keeps exp from overflowing."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of integer labels y (N,) under softmax(logits), and dL/dlogits."""
    n = len(y)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), y].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), y] -= 1.0  # p - one_hot(y)
    return float(loss), dlogits / n


def mse_loss(pred: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over every element (as torch's MSELoss), and dL/dpred."""
    diff = pred - y.reshape(pred.shape)
    return float(np.mean(diff**2)), 2.0 * diff / diff.size


# --- the network --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScratchConfig:
    """Shape, loss and initial-weight seed of a scratch MLP."""

    in_features: int = 2  # input width (2 for the toy sets)
    hidden: tuple[int, ...] = (16, 16)  # width of each hidden layer; () gives a linear model
    out_features: int = 2  # one logit per class, or 1 for regression
    activation: str = "relu"  # one of ACTIVATIONS
    loss: str = "cross_entropy"  # one of LOSSES
    seed: int = 0  # seeds the numpy Generator that draws the initial weights

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.activation not in ACTIVATIONS:
            raise MaaslabError(
                f"unknown activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.loss not in LOSSES:
            raise MaaslabError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if min((self.in_features, self.out_features, *self.hidden)) < 1:
            raise MaaslabError("layer widths must be positive integers")


def init_params(config: ScratchConfig) -> Params:
    """Weights from N(0, gain / fan_in) (He for relu), biases from U(±1/sqrt(fan_in)) like torch."""
    rng = np.random.default_rng(config.seed)
    gain = 2.0 if config.activation == "relu" else 1.0  # relu zeroes half its inputs
    widths = (config.in_features, *config.hidden, config.out_features)
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths), start=1):
        params[f"W{i}"] = rng.normal(0.0, np.sqrt(gain / fan_in), size=(fan_in, fan_out))
        # Not zero: with zero biases a row whose ReLUs are all off gives a pre-activation of
        # exactly 0, relu's kink, where finite differences disagree with any gradient.
        bound = 1.0 / np.sqrt(fan_in)
        params[f"b{i}"] = rng.uniform(-bound, bound, size=fan_out)
    return params


def _check_bug(bug: str | None) -> None:
    if bug is not None and bug not in BUGS:
        raise MaaslabError(f"unknown bug {bug!r}: choose one of {', '.join(BUGS)} or None")


class ScratchMLP:
    """An MLP whose parameters are NumPy arrays; forward caches what backward needs."""

    def __init__(self, config: ScratchConfig = ScratchConfig()) -> None:
        self.config = config
        self.params = init_params(config)
        self._cache: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (x, z, a) per layer

    @property
    def n_layers(self) -> int:
        """Number of linear layers (hidden layers + output)."""
        return len(self.config.hidden) + 1

    def forward(self, X: np.ndarray) -> np.ndarray:
        """(N, in_features) -> (N, out_features); caches each layer's (x, z, a) for backward."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.config.in_features:
            raise MaaslabError(
                f"X has shape {x.shape}; this network expects (N, {self.config.in_features})"
            )
        self._cache = []
        for i in range(1, self.n_layers + 1):
            z = linear_forward(x, self.params[f"W{i}"], self.params[f"b{i}"])
            a = z if i == self.n_layers else activation_forward(self.config.activation, z)
            self._cache.append((x, z, a))
            x = a
        return x

    def backward(self, dout: np.ndarray, *, bug: str | None = None) -> Params:
        """Gradients of every parameter from dL/d(output), walking the cache from the end."""
        if len(self._cache) != self.n_layers:
            raise MaaslabError("call forward before backward: backward reuses its cached values")
        grads: Params = {}
        for i in range(self.n_layers, 0, -1):
            x, z, a = self._cache[i - 1]
            if i < self.n_layers:
                dout = activation_backward(self.config.activation, dout, z, a)
            dout, grads[f"W{i}"], grads[f"b{i}"] = linear_backward(dout, x, self.params[f"W{i}"])
            if bug == "missing_bias_grad":
                grads[f"b{i}"] = np.zeros_like(grads[f"b{i}"])
        return {k: grads[k] for k in self.params}  # W1, b1, W2, ... in layer order

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """The loss of the current parameters on (X, y)."""
        return self._loss_fn(self.forward(X), y)[0]

    def loss_and_grads(
        self, X: np.ndarray, y: np.ndarray, *, bug: str | None = None
    ) -> tuple[float, Params]:
        """Forward, loss and backward in one call: (loss, gradient of every parameter).

        Parameters
        ----------
        X, y : a batch of inputs (N, in_features) and labels (N,) or targets (N, out_features).
        bug : None for correct gradients, or one of BUGS to reproduce that mistake.
        """
        _check_bug(bug)
        out = self.forward(X)
        loss, dout = self._loss_fn(out, y)
        if bug == "wrong_sign":
            dout = -dout
        elif bug == "missing_batch_mean":
            dout = dout * len(out)
        return loss, self.backward(dout, bug=bug)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels (cross-entropy) or the outputs themselves (MSE)."""
        out = self.forward(X)
        return out.argmax(axis=1) if self.config.loss == "cross_entropy" else out

    def _loss_fn(self, out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        y = np.asarray(y)
        if len(y) != len(out) or len(y) == 0:
            raise MaaslabError(f"X has {len(out)} rows but y has {len(y)}: give one label per row")
        if self.config.loss == "mse":
            if y.size != out.size:
                raise MaaslabError(f"targets of shape {y.shape} do not fit outputs {out.shape}")
            return mse_loss(out, y.astype(np.float64))
        if y.ndim != 1 or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= out.shape[1]:
            raise MaaslabError(f"labels must be integers in [0, {out.shape[1] - 1}], shape (N,)")
        return softmax_cross_entropy(out, y)


def accuracy(model: ScratchMLP, X: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose predicted class equals the label (classification only)."""
    if model.config.loss != "cross_entropy":
        raise MaaslabError("accuracy needs a classifier (loss='cross_entropy'); use the MSE")
    return float(np.mean(model.predict(X) == np.asarray(y)))


# --- training -----------------------------------------------------------------------------------


def sgd_step(params: Params, grads: Params, lr: float, *, bug: str | None = None) -> Params:
    """New parameters p - lr * grad (p + lr * grad with bug="gradient_ascent")."""
    _check_bug(bug)
    if not lr > 0 or not np.isfinite(lr):
        raise MaaslabError(f"lr must be a positive number, got {lr}")
    if set(grads) != set(params):
        raise MaaslabError(f"grads have keys {sorted(grads)}, params {sorted(params)}")
    sign = 1.0 if bug == "gradient_ascent" else -1.0
    return {k: p + sign * lr * grads[k] for k, p in params.items()}


@dataclass(frozen=True)
class FitResult:
    """What `fit` saw, epoch by epoch (the same meaning as History.train_loss/train_accuracy)."""

    loss: list[float]  # mean mini-batch loss of each epoch
    accuracy: list[float]  # share of correct predictions during each epoch; [] for MSE

    @property
    def final_loss(self) -> float:
        """Loss of the last epoch."""
        return self.loss[-1]

    @property
    def diverged(self) -> bool:
        """True when the loss became NaN or infinite (fit stops there)."""
        return not np.isfinite(self.final_loss)


def fit(
    model: ScratchMLP,
    X: np.ndarray,
    y: np.ndarray,
    *,
    num_epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 32,
    seed: int = 0,
    bug: str | None = None,
) -> FitResult:
    """Mini-batch SGD on (X, y); updates model.params in place and returns per-epoch numbers.

    Parameters
    ----------
    model : the ScratchMLP to train.
    X, y : training inputs and labels (or regression targets).
    num_epochs, lr, batch_size : passes over the data, SGD step size, examples per step.
    seed : seeds the shuffling, so the same seed gives the same run.
    bug : one of BUGS to train with that mistake, None for the correct loop.
    """
    if num_epochs < 1 or batch_size < 1:
        raise MaaslabError("num_epochs and batch_size must be at least 1")
    rng = np.random.default_rng(seed)
    X, y = np.asarray(X), np.asarray(y)
    losses: list[float] = []
    accuracies: list[float] = []
    # A diverging run overflows on its way to inf; the result reports that, so numpy need not.
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(num_epochs):
            order = rng.permutation(len(X))
            loss_sum, correct = 0.0, 0
            for start in range(0, len(X), batch_size):
                idx = order[start : start + batch_size]
                loss, grads = model.loss_and_grads(X[idx], y[idx], bug=bug)
                if model.config.loss == "cross_entropy":
                    correct += int(np.sum(model._cache[-1][2].argmax(axis=1) == y[idx]))
                model.params = sgd_step(model.params, grads, lr, bug=bug)
                loss_sum += loss * len(idx)
            losses.append(loss_sum / len(X))
            if model.config.loss == "cross_entropy":
                accuracies.append(correct / len(X))
            if not np.isfinite(losses[-1]):
                break  # diverged: further epochs only produce NaN
    return FitResult(losses, accuracies)
