import dataclasses
import math

import numpy as np
import pytest
import torch
from sealed import Sealed
from torch import nn

from maaslab import MaaslabError, seed_everything
from maaslab.callbacks import Callback, EarlyStopping, StopOnDivergence, TrainState
from maaslab.data import load_dataset, make_loaders
from maaslab.models import build_model
from maaslab.train import (
    EpochRecord,
    History,
    TrainConfig,
    evaluate_split,
    make_optimizer,
    task_loss,
    train,
    train_step,
)


def _mlp(data, hidden=(16, 16), dropout=0.0, seed=0):
    seed_everything(seed)
    return build_model(
        "mlp",
        in_features=data.n_features,
        hidden=hidden,
        out_features=data.out_features,
        dropout=dropout,
    )


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_learns_moons_and_records_everything():
    data = load_dataset("moons", n_samples=300, noise=0.15)
    model = _mlp(data)
    history = train(model, data, TrainConfig(epochs=30, lr=0.02))
    assert len(history.epochs) == 30 and history.last.val_accuracy > 0.9
    assert history.steps_per_epoch == math.ceil(len(data.y_train) / 32)
    assert len(history.step_loss) == 30 * history.steps_per_epoch
    assert history.epochs[0].train_loss > history.last.train_loss
    assert set(history.last.grad_norms) == {"hidden1", "hidden2", "output"}
    assert all(v > 0 for v in history.last.grad_norms.values())
    assert history.wall_time > 0 and not history.stopped_early
    assert History.from_dict(history.to_dict()) == history


def test_regression_has_losses_but_no_accuracy():
    data = load_dataset("diabetes", standardize=True)
    history = train(_mlp(data, hidden=(8,)), data, TrainConfig(epochs=3, lr=0.05))
    assert history.task == "regression" and history.last.val_accuracy is None
    assert history.last.val_loss < history.epochs[0].val_loss * 1.5


def test_matches_a_bare_pytorch_loop_exactly():
    """Oracle: the instrumented loop computes exactly what a hand-written loop computes."""
    data = load_dataset("moons", n_samples=200)
    ours = _mlp(data, dropout=0.2)
    cfg = TrainConfig(epochs=4, optimizer="momentum", lr=0.05, seed=7, grad_norm_samples=2)
    history = train(ours, data, cfg)

    bare = _mlp(data, dropout=0.2)
    torch.manual_seed(7)
    generator = torch.Generator().manual_seed(7)
    loader, _ = make_loaders(data, 32, generator=generator)
    opt = torch.optim.SGD(bare.parameters(), lr=0.05, momentum=0.9)
    bare.train()
    step, every = 0, len(loader) // 2
    for epoch in range(4):
        correct, seen, norms = 0, 0, []
        for xb, yb in loader:
            out = bare(xb)
            loss = nn.functional.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            if step % every == 0:  # the steps whose gradient norms the loop samples
                norms.append(
                    [
                        torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
                        for layer in (bare.layers.hidden1, bare.layers.hidden2, bare.layers.output)
                    ]
                )
            opt.step()
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
            step += 1
        # the loop evaluates after each epoch; evaluation draws no random numbers
        record = history.epochs[epoch]
        assert record.train_accuracy == pytest.approx(correct / seen)
        mean_norms = torch.tensor(norms).mean(0).tolist()
        assert list(record.grad_norms.values()) == pytest.approx(mean_norms, rel=1e-5)
    assert _same_weights(ours, bare)


class StopAfter(Callback):
    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, state):
        if state.step >= self.steps:
            state.stop = True


def test_a_callback_can_stop_training():
    data = load_dataset("moons", n_samples=400)  # 240 train -> 8 steps per epoch
    history = train(_mlp(data), data, TrainConfig(epochs=50), [StopAfter(20)])
    assert history.stopped_early
    assert len(history.step_loss) == 20
    assert len(history.epochs) == 2  # the third, partial epoch is not recorded


def test_early_stopping_and_divergence_guard():
    data = load_dataset("moons", n_samples=200)
    history = train(_mlp(data), data, TrainConfig(epochs=500, lr=0.05), [EarlyStopping(3)])
    assert history.stopped_early and len(history.epochs) < 500
    wild = load_dataset("diabetes")  # raw targets in the hundreds: lr 3 explodes
    history = train(
        _mlp(wild),
        wild,
        TrainConfig(epochs=50, lr=3.0, optimizer="sgd", batch_size=16),
        [StopOnDivergence()],
    )
    assert history.stopped_early and not math.isfinite(history.step_loss[-1])


def test_training_and_early_stopping_never_read_the_test_split():
    data = load_dataset("moons", n_samples=200)
    sealed = dataclasses.replace(data, X_test=Sealed(), y_test=Sealed())
    model = _mlp(sealed)
    # the seal holds: reading the test split fails (torch refuses it as an array, numpy and
    # Python code get an AssertionError)
    with pytest.raises((AssertionError, TypeError)):
        evaluate_split(model, sealed, "test")
    with pytest.raises(AssertionError, match="test split was read"):
        np.asarray(sealed.X_test)
    history = train(model, sealed, TrainConfig(epochs=500, lr=0.05), [EarlyStopping(3)])
    assert history.stopped_early and len(history.epochs) < 500
    # it stopped 3 epochs after the best validation loss
    val = history.column("val_loss")
    assert len(val) == int(np.argmin(val)) + 1 + 3
    # the test split is read once, afterwards, by whoever reports the result
    loss, accuracy = evaluate_split(model, data, "test")
    assert accuracy > 0.8 and loss > 0


def test_early_stopping_watches_the_validation_loss():
    records = [EpochRecord(i + 1, 0.1, v, None, None, {}, 0.0) for i, v in enumerate([3, 2, 2, 1])]
    stop = EarlyStopping(patience=2)
    state = TrainState(model=nn.Linear(1, 1), history=History(), total_epochs=9, config=None)
    for i, record in enumerate(records):
        state.history.epochs.append(record)
        stop.on_epoch_end(state)
        assert not state.stop, f"stopped after epoch {i + 1} though the loss still improved"
    for record in records[:2]:  # 3 and 2 again: no better than 1
        state.history.epochs.append(record)
        stop.on_epoch_end(state)
    assert state.stop and stop.best == 1 and "2 epochs" in state.info["early_stopping"]


def test_asking_a_history_for_test_figures_says_where_they_are():
    record = EpochRecord(1, 0.5, 0.4, 0.9, 0.8, {}, 0.0)
    for name in ("test_loss", "test_accuracy"):
        with pytest.raises(MaaslabError, match=r"never the test split.*evaluate_split"):
            getattr(record, name)
        with pytest.raises(MaaslabError, match="val_loss, val_accuracy"):
            History(epochs=[record]).column(name)


def test_an_old_history_with_test_figures_is_refused():
    old = {"epochs": [{"epoch": 1, "train_loss": 0.5, "test_loss": 0.4}]}
    with pytest.raises(MaaslabError, match="before training measured a validation split"):
        History.from_dict(old)


def test_adam_weight_decay_is_coupled_l2_and_adamw_decouples_it():
    """Lesson 05 on weight_decay, checked on the torch optimizers that TrainConfig makes."""
    w0, grad, lr, wd = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.1, 0.0, -3.0]), 0.1, 0.01

    def step(optimizer, gradient, weight_decay=0.0):
        layer = nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            layer.weight.copy_(w0)
        opt = make_optimizer(
            layer, TrainConfig(optimizer=optimizer, lr=lr, weight_decay=weight_decay)
        )
        layer.weight.grad = gradient.clone().view(1, 3)
        opt.step()
        return layer.weight.detach().view(3)

    plain = step("adam", grad)
    coupled = step("adam", grad, wd)
    # Adam: the penalty's gradient wd * w is added to the gradient, before the moments
    assert torch.allclose(coupled, step("adam", grad + wd * w0))
    # AdamW: the weights shrink by (1 - lr * wd), then the Adam step of the loss gradient alone
    decoupled = step("adamw", grad, wd)
    assert torch.allclose(decoupled, (1 - lr * wd) * w0 + (plain - w0), atol=1e-7)
    # the weight with a zero gradient: a full Adam step (about lr) under coupled L2, a shrink of
    # only lr * wd * w under AdamW
    assert coupled[1] - w0[1] == pytest.approx(lr, rel=1e-3)
    assert decoupled[1] - w0[1] == pytest.approx(lr * wd * 2.0, rel=1e-4)


def test_an_exploding_classification_loss_counts_as_divergence():
    data = load_dataset("moons", n_samples=400)
    guard = StopOnDivergence(factor=10)
    history = train(_mlp(data), data, TrainConfig(epochs=50, lr=3.0), [guard])
    assert history.stopped_early and len(history.epochs) < 50
    assert history.epochs[-1].train_loss > 10 * history.step_loss[0]
    calm = train(_mlp(data), data, TrainConfig(epochs=5, lr=0.01), [StopOnDivergence()])
    assert not calm.stopped_early and len(calm.epochs) == 5


def test_checkpoint_then_resume_continues_from_the_saved_epoch(tmp_path):
    data = load_dataset("digits")
    ckpt = str(tmp_path / "ckpt")
    first = train(_mlp(data, (32,), 0.1), data, TrainConfig(epochs=2, checkpoint_dir=ckpt))
    assert len(first.epochs) == 2

    resumed_model = _mlp(data, (32,), 0.1, seed=99)  # different init: weights must come from disk
    resumed = train(resumed_model, data, TrainConfig(epochs=4, checkpoint_dir=ckpt, resume=True))
    assert [e.epoch for e in resumed.epochs] == [1, 2, 3, 4]
    assert resumed.epochs[:2] == first.epochs

    straight_model = _mlp(data, (32,), 0.1)
    straight = train(straight_model, data, TrainConfig(epochs=4))
    assert resumed.step_loss == straight.step_loss  # same batches, same dropout masks
    assert _same_weights(resumed_model, straight_model)


def test_resume_refuses_a_missing_or_foreign_checkpoint(tmp_path):
    data = load_dataset("moons", n_samples=100)
    with pytest.raises(MaaslabError, match="no training checkpoint"):
        train(_mlp(data), data, TrainConfig(checkpoint_dir=str(tmp_path / "x"), resume=True))
    ckpt = str(tmp_path / "ckpt")
    train(_mlp(data), data, TrainConfig(epochs=1, checkpoint_dir=ckpt))
    with pytest.raises(MaaslabError, match="different model"):
        train(
            _mlp(data, hidden=(4,)), data, TrainConfig(epochs=2, checkpoint_dir=ckpt, resume=True)
        )
    with pytest.raises(MaaslabError, match="same optimizer"):
        train(
            _mlp(data),
            data,
            TrainConfig(epochs=2, optimizer="sgd", checkpoint_dir=ckpt, resume=True),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
        ({"lr": -1.0}, "learning rate"),
        ({"lr": float("nan")}, "learning rate"),
        ({"epochs": 0}, "at least 1"),
        ({"resume": True}, "needs a checkpoint_dir"),
    ],
)
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(MaaslabError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_like_on_cpu():
    data = load_dataset("moons", n_samples=200)
    gpu = train(_mlp(data), data, TrainConfig(epochs=5, device="cuda"))
    cpu = train(_mlp(data), data, TrainConfig(epochs=5, device="cpu"))
    assert gpu.last.val_loss == pytest.approx(cpu.last.val_loss, rel=1e-3, abs=1e-4)


def test_warmup_linear_schedule_matches_transformers():
    from transformers import get_linear_schedule_with_warmup

    from maaslab.train import lr_factor

    total = 50
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = get_linear_schedule_with_warmup(opt, num_warmup_steps=5, num_training_steps=total)
    for step in range(total):
        # transformers' lambda is the factor *before* step `step`; ours is the factor used at it,
        # which skips the 0 that warm-up starts from (a step at lr 0 does nothing).
        assert lr_factor("warmup_linear", step, total) == pytest.approx(
            ref.lr_lambdas[0](step + 1) if step < 5 else ref.lr_lambdas[0](step)
        )
    assert lr_factor("constant", 7, total) == 1.0
    with pytest.raises(MaaslabError, match="schedule"):
        TrainConfig(schedule="cosine")


def test_train_step_is_forward_loss_backward_update_with_a_hook_before_the_update():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    X, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    expected = nn.functional.cross_entropy(model(X), y)
    before = model.weight.detach().clone()
    seen = {}

    def hook():  # gradients are there, the weights not yet moved
        seen["grad"] = model.weight.grad.clone()
        seen["weight"] = model.weight.detach().clone()

    loss, out = train_step(model, optimizer, X, y, "classification", before_update=hook)
    assert loss.item() == pytest.approx(expected.item()) and out.shape == (8, 2)
    assert torch.equal(seen["weight"], before)
    torch.testing.assert_close(model.weight.detach(), before - 0.5 * seen["grad"])
    # regression compares shapes (N, 1) with targets (N,); a language model every position
    assert task_loss(torch.ones(4, 1), torch.zeros(4), "regression").item() == 1.0
    logits = torch.zeros(2, 5, 7)  # uniform over 7 tokens at every position
    lm = task_loss(logits, torch.zeros(2, 5, dtype=torch.long), "language_model")
    assert lm.item() == pytest.approx(math.log(7))
