"""Data-parallel training: torchrun with 2 processes takes the same steps as one process;
the hand-written collectives and shards match torch.distributed and DistributedSampler."""

import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from maaslab import MaaslabError
from maaslab.distributed import (
    DDPConfig,
    all_reduce_values,
    allreduce_seconds,
    average_gradients,
    cli_args,
    ddp_gradients,
    global_batches,
    global_gradient,
    load_run,
    max_relative_difference,
    measure_scaling,
    parameter_server_bytes,
    process_group,
    reference_train,
    ring_allreduce,
    ring_bytes_per_rank,
    run_in_process,
    run_spawned,
    run_torchrun,
    scaled_lr,
    shard_gradients,
    shard_indices,
    torchrun_command,
    train_ddp,
)
from maaslab.distributed.__main__ import config_from_args, main
from maaslab.distributed.ddp import GRADIENTS_FILE, LOG_FILE, MODEL_DIR
from maaslab.distributed.ranks import run_command, start_ranks
from maaslab.models import build_model
from maaslab.paths import ROOT
from maaslab.registry import load_model, read_safetensors

TINY = DDPConfig(hidden=(16,), epochs=2, batch_size=16, max_steps=50, record_gradients=True)


def test_torchrun_two_processes_match_one_process(tmp_path):
    # The acceptance test: the real command line, 2 processes on gloo, against one process
    # taking the same global batches with the same optimizer: same gradients, same weights.
    cfg = DDPConfig(**{**TINY.__dict__, "output": str(tmp_path / "run")})
    cmd = torchrun_command(cfg, 2)
    assert cmd[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 rank(s), backend gloo" in done.stdout
    assert done.stdout.count("epoch 2:") == 1  # only rank 0 prints
    run = load_run(cfg.output)
    assert (run.world_size, run.global_batch, run.steps) == (2, 32, 50)  # 42 steps/epoch

    model, first_grads, losses = reference_train(cfg, world_size=2)
    ddp_grads = read_safetensors(tmp_path / "run" / GRADIENTS_FILE)
    assert max_relative_difference(ddp_grads, first_grads) < 1e-5
    ddp_model = load_model(tmp_path / "run" / MODEL_DIR)
    assert max_relative_difference(ddp_model.state_dict(), model.state_dict()) < 1e-5
    np.testing.assert_allclose(run.step_loss, losses, rtol=1e-5)
    # and the run really trained: the weights moved far more than the tolerance
    fresh = build_model("mlp", in_features=64, hidden=(16,), out_features=10)
    assert max_relative_difference(fresh.state_dict(), model.state_dict()) > 1e-2


def test_a_training_split_too_small_or_a_bad_flag_is_one_clear_line(tmp_path, capsys):
    # Without torchrun the entry point runs as a group of one: the same checks as every rank.
    assert main(["--batch-size", "2000", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "fewer than one global batch of 1 ranks x 2000" in err and "lower --batch-size" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as stop:
        main(["--model", "resnet"])
    assert stop.value.code == 2 and "invalid choice: 'resnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--hidden", "64,x"])
    assert "expected widths like 64,64" in capsys.readouterr().err
    assert main(["--model", "cnn", "--dataset", "moons"]) == 2
    assert "the cnn needs images" in capsys.readouterr().err
    with pytest.raises(MaaslabError, match="cannot be split into 3 equal shards"):
        shard_gradients(build_model("mlp", in_features=2), torch.zeros(8, 2), torch.zeros(8), 3)
    if not torch.cuda.is_available():
        with pytest.raises(MaaslabError, match="nccl needs CUDA"), process_group("nccl"):
            pass
    with pytest.raises(MaaslabError, match=r"needs cfg\.output"):
        run_torchrun(TINY)


def test_a_group_of_one_trains_in_process_like_the_reference(tmp_path):
    cfg = DDPConfig(**{**TINY.__dict__, "max_steps": 5, "output": str(tmp_path)})
    lines = []
    with process_group() as (rank, world):
        assert (rank, world) == (0, 1)
        run = train_ddp(cfg, log=lines.append)
    assert not torch.distributed.is_initialized()  # destroyed on the way out
    assert run.steps == 5 and run.allreduce_ms == 0.0 and "1 rank(s)" in lines[0]
    model, _, losses = reference_train(cfg, world_size=1)
    assert (
        max_relative_difference(load_model(tmp_path / MODEL_DIR).state_dict(), model.state_dict())
        < 1e-6
    )
    np.testing.assert_allclose(run.step_loss, losses, rtol=1e-6)
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else 2
    again = run_in_process(replace(cfg, threads=other, output=str(tmp_path / "again")))
    assert again.threads == other and torch.get_num_threads() == threads  # restored
    assert again.step_loss == pytest.approx(run.step_loss, rel=1e-6)
    assert load_run(tmp_path / "again").steps == 5


def test_spawned_ranks_take_the_reference_steps_and_scaling_rows_come_out(tmp_path, monkeypatch):
    # notebook 13's fast path; a fork of this process (which holds threads) would fail here
    monkeypatch.setattr(os, "fork", _no_fork)
    cfg = DDPConfig(**{**TINY.__dict__, "max_steps": 6, "output": str(tmp_path / "f")})
    run = run_spawned(cfg, 2)
    assert (run.world_size, run.steps) == (2, 6) and run.allreduce_ms > 0
    assert "2 rank(s)" in (tmp_path / "f" / LOG_FILE).read_text()
    model, _, losses = reference_train(cfg, world_size=2)
    ddp_model = load_model(tmp_path / "f" / MODEL_DIR)
    assert max_relative_difference(ddp_model.state_dict(), model.state_dict()) < 1e-5
    np.testing.assert_allclose(run.step_loss, losses, rtol=1e-5)
    rows = measure_scaling(cfg, ((1, 1), (2, 1)), global_batch=32, launcher="spawn")
    assert [(r.processes, r.global_batch) for r in rows] == [(1, 32), (2, 32)]
    assert rows[0].speedup == 1.0 and rows[0].allreduce_ms == 0 and rows[1].allreduce_ms > 0
    with pytest.raises(MaaslabError, match="unknown launcher"):
        measure_scaling(cfg, launcher="mpi")


def _no_fork():
    raise AssertionError("a rank was forked from a process that may hold threads")


def test_a_stuck_rank_is_killed_at_the_deadline_with_a_clear_error(tmp_path):
    started = time.monotonic()
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]  # never reaches a collective
    with pytest.raises(MaaslabError, match=r"did not finish within 3 s: stopped them all"):
        start_ranks(sleeper, 2, tmp_path, timeout=3)
    assert time.monotonic() - started < 30
    with pytest.raises(MaaslabError, match="did not finish within 1 s: stopped it and its ranks"):
        run_command(sleeper, cwd=ROOT, env=dict(os.environ), timeout=1)


def test_a_failing_rank_stops_the_others_and_says_why(tmp_path):
    # rank 1 fails at once; rank 0 would wait for it forever
    script = (
        "import sys, time\n"
        "if sys.argv[1] == '1': sys.exit('error: no data for rank 1')\n"
        "time.sleep(600)"
    )
    started = time.monotonic()
    with pytest.raises(MaaslabError, match=r"rank 1 failed \(exit code 1\): no data for rank 1"):
        start_ranks([sys.executable, "-c", script], 2, tmp_path, timeout=120)
    assert time.monotonic() - started < 30
    with pytest.raises(MaaslabError, match="between 1 and 8"):
        start_ranks([sys.executable, "-c", ""], 9, tmp_path)


def test_real_ddp_gradients_equal_the_global_batch_gradient(monkeypatch):
    monkeypatch.setattr(os, "fork", _no_fork)
    torch.manual_seed(0)
    model = build_model("mlp", in_features=64, hidden=(32,), out_features=10)
    X, y = torch.randn(24, 64), torch.randint(0, 10, (24,))
    expected = global_gradient(model, X, y)
    by_hand = average_gradients(shard_gradients(model, X, y, 2))
    assert max_relative_difference(by_hand, expected) < 1e-6
    ranks = ddp_gradients(model, X, y, world_size=2)
    assert len(ranks) == 2 and max_relative_difference(ranks[1], ranks[0]) == 0.0
    assert max_relative_difference(ranks[0], expected) < 1e-6
    # one rank's own gradient is not the global one: the all-reduce matters
    assert max_relative_difference(shard_gradients(model, X, y, 2)[0], expected) > 1e-2


def test_hand_all_reduce_and_the_ring_match_torch_distributed(monkeypatch):
    monkeypatch.setattr(os, "fork", _no_fork)
    g = torch.Generator().manual_seed(1)
    values = [torch.randn(7, generator=g) for _ in range(3)]
    summed = all_reduce_values(values)
    for held in summed:  # every rank holds the sum
        torch.testing.assert_close(held, torch.stack(values).sum(0))
    mean = average_gradients([{"g": v} for v in values])["g"]
    torch.testing.assert_close(mean, summed[0] / 3)
    ring = ring_allreduce([v.numpy() for v in values])
    for held in ring.values:
        np.testing.assert_allclose(held, summed[0].numpy(), rtol=1e-6)
    # 7 values in chunks of 3, 2, 2: each rank sends 2 (p-1) chunks, on average 2 (p-1)/p of 7
    assert ring.steps == 4 and sum(ring.elements_sent) == 3 * 2 * 2 * 7 / 3
    assert ring_bytes_per_rank(7, 3, 4) == pytest.approx(np.mean(ring.elements_sent) * 4)


@pytest.mark.parametrize(
    ("n", "world", "seed", "epoch"), [(10, 3, 5, 0), (10, 3, 5, 2), (7, 2, 0, 1), (64, 4, 3, 0)]
)
def test_shard_indices_match_distributed_sampler(n, world, seed, epoch):
    for rank in range(world):
        sampler = DistributedSampler(range(n), world, rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        assert shard_indices(n, world, rank, seed=seed, epoch=epoch) == list(sampler)
    steps = global_batches(n, world, 1, seed=seed, epoch=epoch)
    assert len(steps) == n // world and all(len(s) == world for s in steps)
    assert len({i for s in steps for i in s}) == (n // world) * world  # no example twice


def test_cost_models_and_scaling_rule():
    assert ring_bytes_per_rank(1000, 1) == 0
    assert ring_bytes_per_rank(1000, 4, 2) == 2 * 3 / 4 * 1000 * 2
    ps = parameter_server_bytes(1000, 8)
    assert ps["server"] == 8 * ps["per_worker"] == 8 * 8000
    t = allreduce_seconds(10**8, 8, bandwidth_gbps=100, latency_us=0)
    assert t == pytest.approx(ring_bytes_per_rank(10**8, 8) / 100e9)
    assert scaled_lr(0.1, 256, 1024) == pytest.approx(0.4)
    with pytest.raises(MaaslabError, match="bandwidth must be positive"):
        allreduce_seconds(10, 2, 0)


def test_command_line_round_trip_and_multi_node_command():
    cfg = DDPConfig(hidden=(8, 8), epochs=3, lr=0.05, record_gradients=True, output="runs/x")
    assert config_from_args(cli_args(cfg)) == cfg
    cmd = torchrun_command(cfg, 8, nnodes=2, rdzv_endpoint="node0:29500")
    assert "--standalone" not in cmd and "--nnodes=2" in cmd and "--nproc_per_node=8" in cmd
    assert "--rdzv-endpoint=node0:29500" in cmd and "--rdzv-backend=c10d" in cmd
    assert cmd[cmd.index("-m", 3) + 1] == "maaslab.distributed"
    with pytest.raises(MaaslabError, match="need --rdzv-endpoint"):
        torchrun_command(cfg, 2, nnodes=2)


def test_figures_draw_the_numbers_they_are_given():
    from maaslab import plots
    from maaslab.distributed import ScalingRow

    rows = [
        ScalingRow(1, 1, 64, 500.0, 32000.0, 1.0, 0.0, 1.0, ""),
        ScalingRow(2, 1, 64, 250.0, 16000.0, 0.6, 0.9, 0.5, ""),
    ]
    fig = plots.scaling_bars(rows)
    assert list(fig.data[0].y) == [500.0, 250.0] and list(fig.data[0].text) == ["1.00x", "0.50x"]
    assert list(fig.data[2].y) == [0.0, 0.9] and fig.layout.barmode == "stack"
    volume = plots.communication_volume(1_000_000, [2, 4])
    ring = next(t for t in volume.data if t.name.startswith("ring"))
    assert list(ring.y) == [4.0, 6.0]  # MB: 2 (p-1)/p x 4 MB
    server = next(t for t in volume.data if "server's link" in t.name)
    assert list(server.y) == [16.0, 32.0]
    match = plots.loss_match([1.0, 0.5], [1.0, 0.5 + 2e-7])
    assert "2.0e-07" in match.layout.title.text


def test_a_ddp_wrapper_is_freed_before_its_process_group_is_destroyed():
    # A DDP wrapper still alive when the group goes made ranks abort at exit (SIGABRT,
    # "terminate called without an active exception") after finishing their work.
    import weakref

    from torch.nn.parallel import DistributedDataParallel

    with process_group("gloo"):
        wrapper = DistributedDataParallel(torch.nn.Linear(2, 2))
        alive = weakref.ref(wrapper)
        cycle = {"wrapper": wrapper}
        cycle["self"] = cycle  # as a closure or a training record can hold it
        del wrapper, cycle  # unreachable now, but only the garbage collector frees it
        assert alive() is not None
    assert alive() is None
