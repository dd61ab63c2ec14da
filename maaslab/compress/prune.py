"""Magnitude pruning with fine-tuning: set the smallest weights to zero, then let the rest adapt.

Unstructured pruning zeroes single weights: the `amount` fraction with the smallest |w| over
every Linear and Conv weight of the model at once (global L1, so layers with many small weights
lose more). The zeros are scattered, so dense matrix kernels do the same work as before: the
model compresses well but does not run faster. Structured pruning removes whole neurons: in a
MiniLM classifier the FFN's intermediate neurons (a row of `intermediate.dense`, its bias, and
the matching column of `output.dense`); in the digits CNN whole conv channels and hidden units;
in an MLP hidden units. The neurons with the smallest L1 weight norm go, `amount` of each layer.
FFN neurons are chosen over attention heads because the FFN holds two thirds of a block's
weights and its neurons are independent of each other, whereas a head's 32 dimensions are tied
through the softmax. Once removed for good, the layers are rebuilt smaller, so structured
pruning changes the shapes (and the work) of the model.

Both kinds fine-tune with the shared loop afterwards while torch.nn.utils.prune's masks keep
the pruned weights at zero, then make the masks permanent.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from maaslab.callbacks import Callback, TrainState
from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.runtime import fast_mode, seed_everything

KINDS = ("unstructured", "structured")
FAST_EXAMPLES = 96  # training examples a fine-tune uses in fast mode
FAST_EPOCHS = 1  # and at most this many epochs

Progress = Callable[[str, float], None]


# --- shared by pruning and distillation: progress, cancel, fast mode ------------------------------


class Watch(Callback):
    """Report training progress as progress(stage, fraction); stop when `cancel` is set."""

    def __init__(self, progress: Progress | None, cancel: threading.Event | None, stage: str):
        self.progress, self.cancel, self.stage = progress, cancel, stage

    def on_step_end(self, state: TrainState) -> None:
        """Called after every step, so Cancel takes effect within one step."""
        if self.progress is not None:
            total = state.total_epochs * max(state.history.steps_per_epoch, 1)
            self.progress(self.stage, min(1.0, state.step / total))
        if self.cancel is not None and self.cancel.is_set():
            state.stop = True


def check_cancel(cancel: threading.Event | None, what: str) -> None:
    """Raise maaslab.explain.Cancelled when `cancel` is set."""
    if cancel is not None and cancel.is_set():
        from maaslab.explain.core import Cancelled

        raise Cancelled(f"the {what} was cancelled")


def fast_subset(data: Dataset, epochs: int) -> tuple[Dataset, int]:
    """(data, epochs) cut to FAST_EXAMPLES training examples and FAST_EPOCHS in fast mode."""
    if not fast_mode():
        return data, epochs
    small = dataclasses.replace(
        data, X_train=data.X_train[:FAST_EXAMPLES], y_train=data.y_train[:FAST_EXAMPLES]
    )
    return small, min(epochs, FAST_EPOCHS)


# --- which weights -------------------------------------------------------------------------------


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) of every Linear and Conv layer: the weights pruning may zero."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the Linear and Conv weights of `model`."""
    weights = [m.weight for _, m in prunable(model)]
    if not weights:
        raise MaaslabError("this model has no Linear or Conv layers to measure")
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def _is_text(model: nn.Module) -> bool:
    # A MiniLM classifier: a BERT-style encoder with .encoder.encoder.layer and an encode().
    return hasattr(model, "encode") and hasattr(getattr(model, "encoder", None), "encoder")


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # The Linear/Conv layers of a maaslab MLP or CNN in forward order (the last is the output).
    layers = getattr(model, "layers", None)
    if getattr(model, "model_type", None) not in ("mlp", "cnn") or layers is None:
        raise MaaslabError(
            f"structured pruning knows MiniLM classifiers, the CNN and the MLP, not "
            f"{type(model).__name__}; use kind='unstructured'"
        )
    return [(n, m) for n, m in layers.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _structured_groups(model: nn.Module) -> list[nn.Module]:
    # The layers whose output neurons (rows) are pruned; their consumers follow from the model.
    if _is_text(model):
        return [block.intermediate.dense for block in model.encoder.encoder.layer]
    return [m for _, m in _chain(model)[:-1]]


# --- pruning ----------------------------------------------------------------------------------


def apply_masks(model: nn.Module, kind: str, amount: float) -> list[tuple[nn.Module, str]]:
    """Attach torch.nn.utils.prune masks; return the (module, parameter) pairs that carry one."""
    if kind == "unstructured":
        params = [(m, "weight") for _, m in prunable(model)]
        torch_prune.global_unstructured(
            params, pruning_method=torch_prune.L1Unstructured, amount=amount
        )
        return params
    pruned = []
    for layer in _structured_groups(model):
        torch_prune.ln_structured(layer, "weight", amount=amount, n=1, dim=0)
        pruned.append((layer, "weight"))
        if layer.bias is not None:
            # A removed neuron must output exactly 0: its bias goes with its weights.
            rows = layer.weight_mask.flatten(1).any(1).to(layer.bias.dtype)
            torch_prune.custom_from_mask(layer, "bias", rows)
            pruned.append((layer, "bias"))
    return pruned


def _finetune(model: nn.Module, data: Dataset, epochs: int, seed: int, progress, cancel) -> None:
    from maaslab.train import TrainConfig, train

    if _is_text(model):
        # Every encoder weight trains (the merged classifier arrives frozen), except the word
        # table: it is not pruned and holds half the weights.
        for p in model.parameters():
            p.requires_grad_(True)
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=16,
            optimizer="adamw",
            lr=3e-5,
            weight_decay=0.01,
            schedule="warmup_linear",
            seed=seed,
            device="cpu",
        )
    else:
        # The digits models' own recipe, at a tenth of its learning rate: adjust, not relearn.
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=32,
            optimizer="adam",
            lr=0.0003,
            seed=seed,
            device="cpu",
            cpu_threads=1,
        )
    train(model, data, cfg, callbacks=[Watch(progress, cancel, "fine-tuning")])


def prune(
    model: nn.Module,
    *,
    kind: str,
    amount: float,
    data: Dataset | None = None,
    finetune_epochs: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> nn.Module:
    """A pruned, fine-tuned copy of `model` (the input is not changed), same forward contract.

    Parameters
    ----------
    model : a torch classifier: the merged MiniLM classifier (auto.load("sentiment-minilm")
        .model), digits-cnn or digits-mlp (.model), or any module with Linear/Conv layers
        (unstructured only).
    kind : "unstructured" (global smallest |w|) or "structured" (whole neurons / channels,
        removed, so the layers shrink).
    amount : fraction of weights (unstructured) or of each pruned layer's neurons (structured)
        to remove, strictly between 0 and 1.
    data : the Dataset the model was trained on (review_dataset(model) for MiniLM, the digits
        Dataset for the digits models); needed when finetune_epochs > 0.
    finetune_epochs : passes of fine-tuning with the masks on (0: prune only). Fast mode cuts
        it to one epoch on a few examples.
    seed : seeds fine-tuning.
    progress : called as progress(stage, fraction) while it runs.
    cancel : set it to stop; the call then raises maaslab.explain.Cancelled.
    """
    if kind not in KINDS:
        raise MaaslabError(f"unknown pruning kind {kind!r}: choose one of {', '.join(KINDS)}")
    if not isinstance(amount, (int, float)) or not 0.0 < amount < 1.0:
        raise MaaslabError(f"amount is the fraction to prune and must lie in (0, 1), got {amount}")
    if not isinstance(finetune_epochs, int) or finetune_epochs < 0:
        raise MaaslabError(f"finetune_epochs must be 0 or more, got {finetune_epochs}")
    if finetune_epochs and data is None:
        raise MaaslabError("fine-tuning needs the training data: pass data=, or finetune_epochs=0")
    if not prunable(model):
        raise MaaslabError(f"{type(model).__name__} has no Linear or Conv layers to prune")
    if kind == "structured" and not _is_text(model):
        _chain(model)  # refuses models it cannot shrink, before any work
    report = progress or (lambda stage, fraction: None)
    seed_everything(seed)
    report("pruning", 0.0)
    model = copy.deepcopy(model).cpu().eval()
    masked = apply_masks(model, kind, amount)
    check_cancel(cancel, "pruning")
    if finetune_epochs:
        data, finetune_epochs = fast_subset(data, finetune_epochs)
        _finetune(model, data, finetune_epochs, seed, progress, cancel)
        check_cancel(cancel, "pruning")
    for module, name in masked:
        torch_prune.remove(module, name)  # the zeros become the weights themselves
    if kind == "structured":
        report("shrinking", 0.9)
        model = shrink(model)
    for p in model.parameters():
        p.requires_grad_(False)
    report("done", 1.0)
    return model.eval()


# --- removing pruned neurons for good ------------------------------------------------------------


def _kept(layer: nn.Module) -> torch.Tensor:
    # Indices of the output neurons (rows / channels) that still have a nonzero weight.
    keep = layer.weight.detach().flatten(1).ne(0).any(1).nonzero().flatten()
    return keep if len(keep) else torch.zeros(1, dtype=torch.long)  # never an empty layer


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias)
    return layer


@torch.no_grad()
def shrink(model: nn.Module) -> nn.Module:
    """Rebuild `model` without its all-zero neurons (same outputs, smaller layers).

    MiniLM classifier: each block's FFN keeps only its live intermediate neurons. CNN / MLP: a
    new model of the same class with fewer channels / hidden units (in its config), so it can
    be saved as a model folder. A neuron with zero weights and bias outputs act(0); that is 0
    for every activation here but the sigmoid, and a sigmoid model is returned unshrunk.
    """
    if _is_text(model):
        for block in model.encoder.encoder.layer:
            up, down = block.intermediate.dense, block.output.dense
            keep = _kept(up)
            block.intermediate.dense = _linear(up.weight[keep], up.bias[keep])
            block.output.dense = _linear(down.weight[:, keep], down.bias)
        return model
    chain = _chain(model)
    act = getattr(model.config, "activation", "relu")
    if act == "sigmoid":
        return model
    keeps = [_kept(m) for _, m in chain[:-1]]
    state = model.state_dict()
    prev: torch.Tensor | None = None  # input indices kept by the previous layer
    for i, (name, layer) in enumerate(chain):
        w, b = layer.weight, layer.bias
        if prev is not None:
            if isinstance(layer, nn.Linear) and isinstance(chain[i - 1][1], nn.Conv2d):
                # After flatten each conv channel is a block of H*W consecutive features.
                per = layer.in_features // chain[i - 1][1].out_channels
                prev = (prev[:, None] * per + torch.arange(per)).flatten()
            w = w[:, prev]
        if i < len(keeps):
            w, b = w[keeps[i]], (b[keeps[i]] if b is not None else None)
            prev = keeps[i]
        state[f"layers.{name}.weight"] = w
        if b is not None:
            state[f"layers.{name}.bias"] = b
    widths = [len(k) for k in keeps]
    if model.model_type == "cnn":
        convs = len(model.config.channels)
        hidden = widths[convs] if model.config.hidden else 0
        config = dataclasses.replace(model.config, channels=tuple(widths[:convs]), hidden=hidden)
    else:
        config = dataclasses.replace(model.config, hidden=tuple(widths))
    small = type(model)(config)
    small.load_state_dict({k: v.clone() for k, v in state.items()})
    return small.eval()
