"""Data-parallel training with torch.distributed: DDP launched by torchrun, and what it does.

- `collective`: all-reduce by hand, ring all-reduce, its bytes and time, DistributedSampler's
  shards, the global batches of a step, the linear learning-rate scaling rule.
- `gradients`: one process on a global batch vs N ranks on its shards (by hand, and real DDP).
- `ddp`: the per-rank training loop (`train_ddp`), its config and record, and the
  single-process reference that takes the same steps.
- `launch`: the torchrun command line, running it, and the 1-vs-2-process timing table.
- `ranks`: starting ranks as fresh processes (spawn, torchrun), each wait with a deadline.

Run it: `torchrun --nproc_per_node=2 -m maaslab.distributed --epochs 2 --output runs/ddp`.
"""

from maaslab.distributed.collective import (
    RingResult,
    allreduce_seconds,
    average_gradients,
    global_batches,
    parameter_server_bytes,
    ring_allreduce,
    ring_bytes_per_rank,
    scaled_lr,
    shard_indices,
    steps_per_epoch,
)
from maaslab.distributed.ddp import (
    GRADIENTS_FILE,
    LOG_FILE,
    MODEL_DIR,
    RUN_FILE,
    DDPConfig,
    DDPRun,
    build,
    check_fits,
    pick_backend,
    process_group,
    reference_train,
    train_ddp,
)
from maaslab.distributed.gradients import (
    all_reduce_values,
    ddp_gradients,
    global_gradient,
    max_relative_difference,
    shard,
    shard_gradients,
)
from maaslab.distributed.launch import (
    LAUNCHERS,
    ScalingRow,
    cli_args,
    load_run,
    measure_scaling,
    run_in_process,
    run_spawned,
    run_torchrun,
    torchrun_command,
)

__all__ = [
    "GRADIENTS_FILE",
    "LAUNCHERS",
    "LOG_FILE",
    "MODEL_DIR",
    "RUN_FILE",
    "DDPConfig",
    "DDPRun",
    "RingResult",
    "ScalingRow",
    "all_reduce_values",
    "allreduce_seconds",
    "average_gradients",
    "build",
    "check_fits",
    "cli_args",
    "ddp_gradients",
    "global_batches",
    "global_gradient",
    "load_run",
    "max_relative_difference",
    "measure_scaling",
    "parameter_server_bytes",
    "pick_backend",
    "process_group",
    "reference_train",
    "ring_allreduce",
    "ring_bytes_per_rank",
    "run_in_process",
    "run_spawned",
    "run_torchrun",
    "scaled_lr",
    "shard",
    "shard_gradients",
    "shard_indices",
    "steps_per_epoch",
    "torchrun_command",
    "train_ddp",
]
