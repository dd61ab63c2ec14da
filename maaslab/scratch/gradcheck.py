"""Checking backprop: central finite differences, and the same network in PyTorch autograd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from maaslab.errors import MaaslabError
from maaslab.models.mlp import MLP, MLPConfig
from maaslab.scratch.network import Params, ScratchMLP

# --- gradient checking --------------------------------------------------------------------------


def numerical_gradient(
    f: Callable[[], float], x: np.ndarray, index: np.ndarray | None = None, eps: float = 1e-5
) -> np.ndarray:
    """Central differences (f(x + eps) - f(x - eps)) / 2 eps for the flat `index` entries of x.

    x is changed in place and restored, so f must read it (e.g. a model's own parameter array).
    Entries not in `index` (default: all) are left at 0.
    """
    if not x.flags.c_contiguous or not x.flags.writeable:
        raise MaaslabError("numerical_gradient needs a writable, contiguous array to nudge")
    grad = np.zeros(x.size)
    flat = x.reshape(-1)  # a view: writing into it moves x
    for i in range(x.size) if index is None else index:
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grad[i] = (plus - minus) / (2.0 * eps)
    return grad.reshape(x.shape)


def bounded_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||), between 0 (they agree) and 1 (one is zero, or opposite).

    Lesson 04's measure. Lesson 01's `maaslab.optimization.linreg.relative_error` divides by
    max(||a||, ||b||) instead: the same verdict near agreement, twice this value there.
    """
    # Norms of the whole array, not entry by entry: a tiny entry's rounding noise would look like
    # a large relative error, while the norm weighs every entry by its share of the gradient.
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


@dataclass(frozen=True)
class GradCheckResult:
    """Analytic gradients against finite differences, parameter by parameter."""

    errors: dict[str, float]  # parameter name -> bounded_relative_error of its checked entries
    checked: int  # number of entries compared
    tolerance: float  # largest relative error that still counts as agreement

    @property
    def max_error(self) -> float:
        """The largest relative error over the parameters."""
        return max(self.errors.values())

    @property
    def worst(self) -> str:
        """The parameter with the largest error."""
        return max(self.errors, key=self.errors.__getitem__)

    @property
    def passed(self) -> bool:
        """True when every parameter's gradient agrees within the tolerance."""
        return self.max_error <= self.tolerance


def gradient_check(
    model: ScratchMLP,
    X: np.ndarray,
    y: np.ndarray,
    *,
    bug: str | None = None,
    grads_fn: Callable[[Params, np.ndarray, np.ndarray], Params] | None = None,
    n_per_param: int | None = None,
    eps: float = 1e-5,
    tolerance: float = 1e-6,
    seed: int = 0,
) -> GradCheckResult:
    """Compare backprop gradients with central finite differences of model.loss.

    Parameters
    ----------
    model, X, y : the network and a (small) batch to check on.
    bug : check the gradients of `model.loss_and_grads(bug=...)`.
    grads_fn : check your own backward instead: grads_fn(model.params, X, y) -> gradients.
    n_per_param : entries sampled (seeded by `seed`) per parameter; None checks them all.
    eps : finite-difference step; 1e-5 balances truncation (eps²) against rounding (1e-16/eps).
    tolerance : the largest relative error that passes; correct float64 backprop gives ~1e-8.
    """
    if (n_per_param is not None and n_per_param < 1) or not eps > 0 or not tolerance > 0:
        raise MaaslabError("n_per_param must be at least 1, eps and tolerance positive")
    grads = grads_fn(model.params, X, y) if grads_fn else model.loss_and_grads(X, y, bug=bug)[1]
    rng = np.random.default_rng(seed)
    errors, checked = {}, 0
    for name, p in model.params.items():
        if name not in grads or np.shape(grads[name]) != p.shape:
            raise MaaslabError(f"gradient {name} is missing or not of shape {p.shape}")
        n = p.size if n_per_param is None else min(n_per_param, p.size)
        index = np.sort(rng.choice(p.size, size=n, replace=False))
        numeric = numerical_gradient(lambda: model.loss(X, y), p, index, eps)
        analytic = np.asarray(grads[name], dtype=np.float64).reshape(-1)[index]
        errors[name] = bounded_relative_error(analytic, numeric.reshape(-1)[index])
        checked += n
    return GradCheckResult(errors, checked, tolerance)


# --- the same network in PyTorch ----------------------------------------------------------------


def to_torch(model: ScratchMLP, dtype: torch.dtype = torch.float64) -> MLP:
    """maaslab.models.MLP with this network's weights copied in (torch stores W transposed)."""
    c = model.config
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten: spare torch's RNG
        net = MLP(MLPConfig(c.in_features, c.hidden, c.out_features, c.activation)).to(dtype)
    names = [f"hidden{i}" for i in range(1, len(c.hidden) + 1)] + ["output"]
    with torch.no_grad():
        for i, name in enumerate(names, start=1):
            getattr(net.layers, name).weight.copy_(torch.from_numpy(model.params[f"W{i}"].T))
            getattr(net.layers, name).bias.copy_(torch.from_numpy(model.params[f"b{i}"]))
    return net


def torch_gradients(model: ScratchMLP, X: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """Loss and parameter gradients of the same network computed by torch autograd (float64)."""
    net = to_torch(model)
    out = net(torch.as_tensor(np.asarray(X), dtype=torch.float64))
    if model.config.loss == "mse":
        loss = F.mse_loss(out, torch.as_tensor(np.asarray(y), dtype=torch.float64).view_as(out))
    else:
        loss = F.cross_entropy(out, torch.as_tensor(np.asarray(y), dtype=torch.long))
    loss.backward()
    linears = [m for m in net.layers if isinstance(m, torch.nn.Linear)]
    grads: Params = {}
    for i, layer in enumerate(linears, start=1):
        grads[f"W{i}"] = layer.weight.grad.T.numpy()
        grads[f"b{i}"] = layer.bias.grad.numpy()
    return loss.item(), grads
