"""The ingress's side of Ray Serve without a cluster (maaslab.scale.ray_serve, ray_llm): a
tensor model's RemoteQueue and a language model's RemoteGeneration against stand-ins of Ray
Serve's handles: tokens handed on as they come, a cancelled call when the client leaves, a
replica that died retried once then answered 503, a replica's own refusal as itself, and the
503's message through Ray's own serializer. The same over HTTP on a real Ray Serve:
tests/server/test_ray_serve.py."""

import asyncio

import numpy as np
import pytest


class _Response:
    """A DeploymentResponse stand-in: awaiting it gives `outcome` (raised if an exception)."""

    def __init__(self, outcome: object) -> None:
        self.outcome, self.cancelled = outcome, False

    def __await__(self):
        if False:  # a generator: await works on it
            yield
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    """A DeploymentHandle stand-in: handle.infer.remote(...) hands out the next outcome."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes, self.calls = list(outcomes), 0
        self.infer = self

    def remote(self, *args: object) -> _Response:
        self.calls += 1
        return _Response(self.outcomes.pop(0))


def test_remote_queue_retries_a_dead_replica_then_answers_503():
    from ray.exceptions import ActorDiedError, RayTaskError

    from maaslab.scale.ray_serve import RemoteQueue, ReplicaLost
    from maaslab.serve.batching import Overloaded

    answer = {"probabilities": np.zeros((1, 10))}
    queue = RemoteQueue("digits-cnn", _Handle(ActorDiedError(), answer))
    assert asyncio.run(queue.submit("x", 1, 5.0)) is answer  # the retry went through
    assert queue.lost == 1 and queue.in_flight == 0
    queue = RemoteQueue("digits-cnn", _Handle(ActorDiedError(), ActorDiedError()))
    with pytest.raises(ReplicaLost, match=r"stopped .*retry after 1 s") as lost:
        asyncio.run(queue.submit("x", 1, 5.0))
    assert isinstance(lost.value, Overloaded) and queue.handle.calls == 2  # answered 503
    # The replica's own refusal (its full queue) comes back as itself, not as a Ray error.
    full = RayTaskError("infer", "traceback", Overloaded("digits-cnn"))
    with pytest.raises(Overloaded, match="overloaded"):
        asyncio.run(RemoteQueue("digits-cnn", _Handle(full)).submit("x", 1, 5.0))


class _Stream:
    """A DeploymentResponseGenerator stand-in: hands out `items` (raised if exceptions)."""

    def __init__(self, items: list) -> None:
        self.items, self.cancelled = list(items), False

    async def __anext__(self):
        if not self.items:
            raise StopAsyncIteration
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


class _StreamHandle:
    """A DeploymentHandle stand-in: options(stream=True).generate.remote(...) hands out the
    next stream; state.remote() is never called here (the engine is not started)."""

    def __init__(self, *streams: list) -> None:
        self.streams, self.sent = [_Stream(s) for s in streams], []
        self.generate = self

    def options(self, stream: bool = False):
        assert stream
        return self

    def remote(self, *args: object) -> _Stream:
        self.sent.append(self.streams.pop(0))
        return self.sent[-1]


def _engine(*streams: list):
    from maaslab.llm.engine import EngineStats
    from maaslab.llm.sequence import SamplingParams
    from maaslab.scale.ray_llm import RemoteEngine

    stats = EngineStats(0, 0, None, 0, 0, 0)
    engine = RemoteEngine("mini-llama", _StreamHandle(*streams), stats)
    params = [SamplingParams(max_tokens=2), SamplingParams(max_tokens=2)]
    return engine, engine.submit([[1, 2], [1, 2]], params)


def test_remote_generation_streams_cancels_and_answers_a_dead_replica_503():
    from ray.exceptions import ActorDiedError, RayTaskError

    from maaslab.llm.engine import TokenOutput
    from maaslab.scale.ray_llm import READY
    from maaslab.scale.ray_serve import ReplicaLost
    from maaslab.serve.batching import Overloaded

    def token(index: int, last: bool) -> tuple[int, TokenOutput]:
        return index, TokenOutput(index, 7, last, "length" if last else None)

    async def run(gen, steps: int) -> list:
        await gen.wait_first()
        return [await gen.next() for _ in range(steps)]

    # Tokens as the replica yields them; the ingress's queue count and latencies follow.
    whole = [READY, token(0, False), token(1, False), token(0, True), token(1, True)]
    engine, gen = _engine(whole)
    seen: list[str] = []
    engine.on_latency = lambda kind, s: seen.append(kind)
    assert engine.depth == 2
    got = asyncio.run(run(gen, 4))
    assert [i for i, _ in got] == [0, 1, 0, 1] and gen.finished and engine.depth == 0
    assert seen.count("first_token") == 2 and seen.count("end_to_end") == 2
    gen.close()
    assert not engine.handle.sent[0].cancelled  # it ran to its end: nothing to cancel
    # Closed midway (the client left): the replica's call is cancelled.
    engine, gen = _engine(whole)
    asyncio.run(run(gen, 1))
    gen.close()
    assert engine.handle.sent[0].cancelled and gen.finished
    # Both choices stopped by their stop strings: cancelled too.
    engine, gen = _engine(whole)
    asyncio.run(run(gen, 2))
    gen.abort(0)
    assert not engine.handle.sent[0].cancelled
    gen.abort(1)
    assert engine.handle.sent[0].cancelled
    # A replica dead before the first token: asked again once, then 503 with Retry-After.
    engine, gen = _engine([ActorDiedError()], whole)
    assert len(asyncio.run(run(gen, 4))) == 4 and engine.lost == 1
    engine, gen = _engine([ActorDiedError()], [ActorDiedError()])
    with pytest.raises(ReplicaLost, match=r"stopped .*retry after 1 s") as lost:
        asyncio.run(run(gen, 1))
    assert isinstance(lost.value, Overloaded) and engine.lost == 2
    gen.close()
    assert engine.depth == 0  # it left without a first token
    # Dead mid-answer: ReplicaLost from next (a 503, or an error event once streaming).
    engine, gen = _engine([READY, token(0, False), ActorDiedError()])
    with pytest.raises(ReplicaLost):
        asyncio.run(run(gen, 2))
    # The replica's own refusals come back as themselves.
    full = RayTaskError("generate", "traceback", Overloaded("mini-llama"))
    engine, gen = _engine([full])
    with pytest.raises(Overloaded, match=r"^model 'mini-llama' is overloaded \(queue full\)"):
        asyncio.run(run(gen, 1))
    assert engine.lost == 0


def test_a_replicas_503_keeps_its_message_through_rays_serializer():
    # What Ray does with an exception raised in a replica: cloudpickle it. Overloaded's
    # message is built from its arguments, so pickled by its args it would nest.
    import ray.cloudpickle

    import maaslab.scale.ray_llm  # noqa: F401  (registers how Overloaded is pickled)
    from maaslab.serve.batching import Overloaded

    sent = Overloaded("mini-llama", retry_after=2, tenant="alice")
    got = ray.cloudpickle.loads(ray.cloudpickle.dumps(sent))
    assert type(got) is Overloaded and str(got) == str(sent) and got.retry_after == 2
