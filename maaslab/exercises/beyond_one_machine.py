"""Lesson 17's auto-checked exercises: Ray Serve's autoscaling decision, a Triton config's
max_batch_size and dims from an ONNX shape, the replicas a target throughput needs, and the share
of requests answered while replicas are dead.

Each check compares the learner's function with the code that decides for real, on fixed probes:
Ray Serve's own default policy (wrapped and bounded as Ray does), the config.pbtxt that
`maaslab.scale.export_triton` writes for a real ONNX graph of that shape, and the ingress's
`RemoteQueue` with its retry. When an answer matches a known mistake (round for ceil, bounds
forgotten, the batch dimension left in `dims`, the first attempt not counted ...) the message
names it.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from maaslab.exercises.grading import (
    CheckResult,
    answer_number,
    call_answer,
    exercise,
    failed,
    first_mistake,
    passed,
)

# --- exercise 1: the replica count Ray Serve's autoscaler settles on ------------------------------

# (ongoing requests summed over the replicas, running replicas, target_ongoing_requests,
#  min_replicas, max_replicas)
AUTOSCALE_PROBES = (
    (6.6, 2, 2.0, 1, 8),  # 3.3 replicas' worth of work: ceil, not round
    (16.0, 1, 2.0, 1, 2),  # 8 wanted, max_replicas 2
    (1.0, 3, 2.0, 2, 5),  # half a replica's worth, min_replicas 2
    (16.0, 2, 8.0, 1, 4),  # the total over all replicas, not one replica's
    (0.0, 2, 2.0, 0, 4),  # no load at all, min_replicas 0
)


def ray_decision(ongoing: float, running: int, target: float, low: int, high: int) -> int:
    """The replicas Ray Serve 2.60's default autoscaling policy decides for a deployment with
    `running` replicas and `ongoing` requests in all, once its up/down delay has passed.

    Ray's own code (ray/serve/autoscaling_policy.py): replica_queue_length_autoscaling_policy
    wrapped by _apply_autoscaling_config (scaling factor, delays), then bounded to
    [min_replicas, max_replicas] as DeploymentAutoscalingState.apply_bounds does
    (ray/serve/_private/autoscaling_state.py).
    """
    from ray.serve._private.common import DeploymentID
    from ray.serve.autoscaling_policy import (
        _apply_autoscaling_config,
        replica_queue_length_autoscaling_policy,
    )
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    # Delays of 0: the decision a delay of any length reaches once the load has lasted it.
    config = AutoscalingConfig(
        min_replicas=low,
        max_replicas=high,
        target_ongoing_requests=target,
        upscale_delay_s=0.0,
        downscale_delay_s=0.0,
    )
    context = AutoscalingContext(
        deployment_id=DeploymentID(name="model", app_name="maaslab"),
        deployment_name="model",
        app_name="maaslab",
        current_num_replicas=running,
        target_num_replicas=running,
        running_replicas=[],
        total_num_requests=ongoing,
        total_queued_requests=0.0,
        aggregated_metrics=None,
        raw_metrics=None,
        capacity_adjusted_min_replicas=low,
        capacity_adjusted_max_replicas=high,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=None,
        config=config,
    )
    decided, _ = _apply_autoscaling_config(replica_queue_length_autoscaling_policy)(context)
    decided = math.ceil(decided)  # get_decision_num_replicas: a float decision is rounded up
    return max(low, min(high, decided))  # apply_bounds, with no target capacity set


def _whole(got: object) -> int | None:
    # A whole number of replicas (an integral float is taken); None for anything else.
    if isinstance(got, bool):
        return None
    if isinstance(got, float) and got.is_integer():
        return int(got)
    try:
        return got if isinstance(got, int) else int(got.__index__())  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        return None


@exercise
def check_autoscale_decision(fn: Callable) -> CheckResult:
    """Check `fn(ongoing, running, target, min_replicas, max_replicas) -> replicas` against
    Ray Serve's default autoscaling policy."""
    name = "Ray Serve's autoscaling decision"
    for ongoing, running, target, low, high in AUTOSCALE_PROBES:
        got, bad = call_answer(name, fn, ongoing, running, target, low, high)
        if bad is not None:
            return bad
        count = _whole(got)
        if count is None:
            return failed(name, f"a replica count is a whole number; you returned {got!r}")
        want = ray_decision(ongoing, running, target, low, high)
        if count == want:
            continue
        where = (
            f"with {ongoing:g} requests ongoing over {running} replica(s), target {target:g}, "
            f"min {low}, max {high} you gave {count}, Ray decides {want}"
        )
        raw = ongoing / target

        def bound(n: float, low: int = low, high: int = high) -> int:
            return max(low, min(high, n))

        mistakes = [
            (bound(round(raw)), "round up (ceil): 3.3 replicas' worth of work needs 4, not 3"),
            (bound(math.floor(raw)), "round up (ceil), not down: a part of a replica is one more"),
            (bound(math.ceil(ongoing / running / target)), "ongoing counts every replica's "
             "requests: desired = total ongoing / target, not one replica's share / target"),
            (bound(math.ceil(running * raw)), "desired replicas = ongoing / target; multiplying "
             "by the running replicas counts them twice"),
            (min(high, math.ceil(raw)), "the result never goes below min_replicas"),
            (max(low, math.ceil(raw)), "the result never goes above max_replicas"),
            (math.ceil(raw), "bound the result to [min_replicas, max_replicas]"),
        ]  # fmt: skip
        if ongoing == 0 and running > 1:
            mistakes.insert(
                0,
                (
                    bound(0),
                    "Ray scales to zero only from one replica: from more it stops at 1 first "
                    "(_apply_delay_logic: max(1, desired) unless the current target is 1)",
                ),
            )
        why = first_mistake(count, [(w, m) for w, m in mistakes if w != want], rtol=0, atol=0)
        if why:
            return failed(name, f"{where}: {why}")
        return failed(
            name,
            f"{where}. Hint: ceil(ongoing / target), then keep it within [min, max]; from more "
            "than one replica Ray never goes straight to 0",
        )
    return passed(
        name,
        "desired replicas = ceil(total ongoing requests / target_ongoing_requests), bounded by "
        "min and max, applied once the load has lasted upscale_delay_s (or downscale_delay_s)",
    )


# --- exercise 2: a Triton config's max_batch_size and dims from an ONNX input shape -------------

# (the ONNX input's shape, -1 where a dimension is dynamic, the batch first; max batch wanted)
TRITON_PROBES = (
    ((-1, 64), 32),  # digits' pixels
    ((-1, 1, 8, 8), 16),  # digits as images
    ((-1, -1), 8),  # token ids: batch and sequence length both dynamic
)


def triton_batching(shape: Sequence[int], max_batch_size: int) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, dims) of the input in the config.pbtxt maaslab.scale.export_triton
    writes for an ONNX graph whose input has `shape` (parsed with tritonclient's ModelConfig)."""
    import onnx
    from onnx import TensorProto, helper

    from maaslab.scale.export_config import ExportConfig
    from maaslab.scale.export_triton import check_config, config_text, parse_config

    # A dynamic dimension is a named one in ONNX (what torch.onnx writes for dynamic axes).
    dims = ["batch" if i == 0 else f"d{i}" if d == -1 else d for i, d in enumerate(shape)]
    kind = TensorProto.INT64 if -1 in shape[1:] else TensorProto.FLOAT  # ids vary in length
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", kind, dims)],
        [helper.make_tensor_value_info("y", kind, dims)],
    )
    with tempfile.TemporaryDirectory(prefix="maaslab-triton-probe-") as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(helper.make_model(graph), str(path))
        config = ExportConfig("probe", "triton", folder, max_batch_size=max_batch_size)
        text = config_text("probe", path, config)
        check_config(text, path)
    parsed = parse_config(text)
    return parsed.max_batch_size, tuple(parsed.input[0].dims)


@exercise
def check_triton_dims(fn: Callable) -> CheckResult:
    """Check `fn(onnx_shape, max_batch_size) -> (max_batch_size, dims)` of a Triton config."""
    name = "a Triton config's max_batch_size and dims"
    for shape, batch in TRITON_PROBES:
        got, bad = call_answer(name, fn, tuple(shape), batch)
        if bad is not None:
            return bad
        try:
            got_batch, got_dims = got  # type: ignore[misc]
            got_batch, got_dims = _whole(got_batch), tuple(int(d) for d in got_dims)
        except (TypeError, ValueError):
            return failed(name, f"return (max_batch_size, dims), got {got!r}")
        want_batch, want_dims = triton_batching(shape, batch)
        if (got_batch, got_dims) == (want_batch, want_dims):
            continue
        where = (
            f"for an ONNX input of shape {list(shape)} and batches of up to {batch} you gave "
            f"max_batch_size {got_batch}, dims {list(got_dims)}; Triton wants {want_batch}, "
            f"{list(want_dims)}"
        )
        if got_batch != want_batch:
            if got_batch in (-1, shape[0]):
                why = "max_batch_size is the most rows one batch may hold, not the graph's -1"
            elif got_batch == 0:
                why = "0 switches batching off; the batch dimension is dynamic, so Triton batches"
            else:
                why = "max_batch_size is the batch size you ask for"
            return failed(name, f"{where}: {why}")
        mistakes = [
            (tuple(shape), "with max_batch_size > 0 Triton adds the batch dimension itself: "
             "dims leave it out"),
            (tuple(d for d in shape if d != -1), "only the first (batch) dimension leaves dims; "
             "another dynamic one (a sequence length) stays as -1"),
            (tuple(shape[:-1]), "drop the first dimension (the batch), not the last"),
        ]  # fmt: skip
        why = next((m for wrong, m in mistakes if got_dims == wrong), None)
        return failed(name, f"{where}: {why}" if why else f"{where}. Hint: dims = shape[1:]")
    return passed(
        name,
        "the dynamic batch dimension becomes max_batch_size and leaves dims; every other "
        "dimension, dynamic ones included (-1), stays in dims",
    )


# --- exercise 3: replicas for a target throughput ------------------------------------------------

# (requests per second wanted, one replica's measured requests per second, share of that rate
#  each replica should run at, leaving headroom for bursts)
REPLICA_PROBES = (
    (250.0, 117.0, 1.0),
    (1000.0, 92.0, 0.8),
    (300.0, 100.0, 0.75),
    (60.0, 117.0, 0.7),
)


def replicas_for(target_rps: float, per_replica_rps: float, utilization: float) -> int:
    """Replicas that serve `target_rps` when each may run at `utilization` of its measured
    `per_replica_rps` (throughput adds up over replicas on cores of their own)."""
    return math.ceil(target_rps / (per_replica_rps * utilization))


@exercise
def check_replicas_needed(fn: Callable) -> CheckResult:
    """Check `fn(target_rps, per_replica_rps, utilization) -> replicas`."""
    name = "replicas for a target throughput"
    for target, rate, util in REPLICA_PROBES:
        got, bad = call_answer(name, fn, target, rate, util)
        if bad is not None:
            return bad
        number, bad = answer_number(name, got, f"({target:g}, {rate:g}, {util:g})")
        if bad is not None:
            return bad
        count = _whole(number)
        want = replicas_for(target, rate, util)
        if count == want:
            continue
        where = (
            f"for {target:g} req/s with {rate:g} req/s per replica at {util:.0%} you gave "
            f"{number:g}, expected {want}"
        )
        exact = target / (rate * util)
        mistakes = [
            (exact, "a replica is whole: round the quotient up"),
            (round(exact), "round up, not to the nearest: 2.1 replicas' worth needs 3"),
            (math.floor(exact), "round up, not down: the rest of the load needs a replica too"),
            (math.floor(exact) + 1, "ceil, not floor + 1: a quotient that is whole needs no extra"),
            (math.ceil(target / rate), "each replica runs at `utilization` of its rate: divide by "
             "per_replica_rps x utilization"),
            (math.ceil(target * util / rate), "divide by the utilisation, not multiply: running "
             "each replica below its rate needs more of them"),
            (math.ceil(rate / target), "that is per_replica_rps / target_rps, upside down"),
        ]  # fmt: skip
        why = first_mistake(number, [(w, m) for w, m in mistakes if w != want], rtol=1e-9)
        return failed(
            name,
            f"{where}: {why}" if why else f"{where}. Hint: ceil(target / (rate x utilization))",
        )
    return passed(
        name,
        "replicas = ceil(target / (per-replica rate x utilization)); it holds while each "
        "replica has cores of its own: measure the rate where the replicas will run",
    )


# --- exercise 4: requests answered while replicas are dead --------------------------------------

# (replicas the router picks among, how many of them are dead, retries after a dead replica)
# The first probe tells every known mistake apart; the last has no retry at all.
FAULT_PROBES = ((3, 2, 2), (3, 2, 1), (4, 1, 1), (2, 1, 1), (2, 1, 0))


class _Reply:
    """A DeploymentResponse stand-in: awaiting it answers, or raises the dead replica's error."""

    def __init__(self, dead: bool) -> None:
        self.dead = dead

    def __await__(self):
        if False:  # a generator: `await` works on it
            yield
        if self.dead:
            from ray.exceptions import ActorDiedError

            raise ActorDiedError()
        return {"probabilities": [[1.0]]}

    def cancel(self) -> None:
        """Nothing runs to cancel."""


class _Picks:
    """A DeploymentHandle stand-in: each call goes to the next replica of `picks`; replicas
    below `dead` are dead."""

    def __init__(self, picks: Sequence[int], dead: int) -> None:
        self.picks, self.dead = list(picks), dead
        self.infer = self

    def remote(self, *args: object) -> _Reply:
        """Send one attempt to the next picked replica."""
        return _Reply(self.picks.pop(0) < self.dead)


def answered_share(replicas: int, dead: int, retries: int) -> float:
    """The share of requests the ingress answers 200 while `dead` of `replicas` are dead, if
    every attempt goes to a replica picked blindly and uniformly: the server's own RemoteQueue
    (maaslab.scale.ray_serve) run on every sequence of picks, each equally likely."""
    import itertools

    from maaslab.scale.ray_serve import RemoteQueue, ReplicaLost
    from maaslab.serve.loadtest import run_coroutine

    sequences = list(itertools.product(range(replicas), repeat=retries + 1))

    async def run_all() -> int:
        answered = 0
        for picks in sequences:
            queue = RemoteQueue("probe", _Picks(picks, dead), retries=retries)  # type: ignore[arg-type]
            try:
                await queue.submit("x", 1, 5.0)
                answered += 1
            except ReplicaLost:  # answered 503 with Retry-After
                pass
        return answered

    return run_coroutine(run_all) / len(sequences)  # a thread of its own inside Jupyter's loop


@exercise
def check_fault_share(fn: Callable) -> CheckResult:
    """Check `fn(replicas, dead, retries) -> share of requests answered 200` while `dead` of
    `replicas` are down and each attempt picks a replica blindly."""
    name = "requests answered while replicas are dead"
    for replicas, dead, retries in FAULT_PROBES:
        got, bad = call_answer(name, fn, replicas, dead, retries)
        if bad is not None:
            return bad
        share, bad = answer_number(name, got, f"({replicas}, {dead}, {retries})")
        if bad is not None:
            return bad
        want = answered_share(replicas, dead, retries)
        if math.isclose(share, want, rel_tol=1e-9, abs_tol=1e-12):
            continue
        where = (
            f"with {dead} of {replicas} replicas dead and {retries} retr"
            f"{'y' if retries == 1 else 'ies'} you gave {share:g}, expected {want:g}"
        )
        lost = dead / replicas
        mistakes = [
            (1 - lost, "that is one attempt: a request is lost only if every attempt is"),
            (1 - lost**retries, "count the first attempt too: retries + 1 attempts in all"),
            ((1 - lost) ** (retries + 1), "that is every attempt succeeding; one is enough"),
            (lost ** (retries + 1), "that is the share lost (503); give the share answered"),
            (100 * want, "a share is a fraction between 0 and 1, not a percentage"),
        ]
        why = first_mistake(share, [(w, m) for w, m in mistakes if w != want], rtol=1e-9)
        return failed(
            name,
            f"{where}: {why}"
            if why
            else f"{where}. Hint: lost only if all retries + 1 attempts find a dead replica",
        )
    return passed(
        name,
        "1 - (dead / replicas) ** (retries + 1): one retry turns half the replicas dead from half "
        "the requests lost into a quarter; a router that stops picking dead replicas does better",
    )
