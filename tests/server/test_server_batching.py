"""Dynamic batching: the Batcher on its own, then batching, overload and timeouts over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from maaslab.errors import MaaslabError
from maaslab.serve.batching import Batcher, Overloaded, RequestTimeout
from maaslab.serve.models import batch_function, try_half


def _recording(seen: list[list[int]], pause: float = 0.0):
    def run(payloads: list[int]) -> list[int]:
        seen.append(list(payloads))
        time.sleep(pause)
        return [p * 10 for p in payloads]

    return run


def test_batcher_groups_requests_and_splits_answers():
    seen: list[list[int]] = []

    async def main():
        b = Batcher("t", _recording(seen), max_batch_size=4, max_delay_s=0.05)
        answers = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.close()
        return answers

    assert asyncio.run(main()) == [i * 10 for i in range(10)]
    assert sorted(x for batch in seen for x in batch) == list(range(10))
    assert max(len(batch) for batch in seen) == 4 and len(seen) == 3  # 4 + 4 + 2


def test_tenants_take_turns_and_a_flood_fills_only_its_own_queue():
    # Tenant A queues 40 requests before B sends 2: B's both join the first batches anyway,
    # A's 41st is refused (its own queue is full) while B can still queue.
    seen: list[list[str]] = []
    shares: list[tuple[str, int, float]] = []

    async def main():
        b = Batcher(
            "t",
            _recording(seen, pause=0.01),
            max_batch_size=4,
            max_delay_s=0.0,
            max_queue=40,
            on_share=lambda tenant, rows, s: shares.append((tenant, rows, s)),
        )
        flood = [asyncio.ensure_future(b.submit(f"a{i}", tenant="A")) for i in range(40)]
        await asyncio.sleep(0.01)  # queued; the worker runs its first batch of A
        for i in range(10):  # top A's queue up to its bound
            if b.full("A"):
                break
            flood.append(asyncio.ensure_future(b.submit(f"a{40 + i}", tenant="A")))
            await asyncio.sleep(0)
        assert b.full("A") and not b.full("B")
        with pytest.raises(Overloaded, match="A's queue full"):
            await b.submit("over", tenant="A")
        mine = [asyncio.ensure_future(b.submit(f"b{i}", tenant="B")) for i in range(2)]
        await asyncio.gather(*flood, *mine)
        await b.close()
        return len(flood)

    sent = asyncio.run(main())
    flat = [x for batch in seen for x in batch]
    # B's requests are served within the first batches after they arrive, not after A's 40
    first_b = next(i for i, batch in enumerate(seen) if any(x.startswith("b") for x in batch))
    assert first_b <= 2, seen[:4]
    assert [x for x in flat if x.startswith("a")] == [f"a{i}" for i in range(sent)]  # FIFO
    assert {t for t, _, _ in shares} == {"A", "B"} and len(shares) == len(flat)


def test_fair_queue_serves_tenants_round_robin():
    from maaslab.serve.batching import FairQueue, _Item

    async def main():
        q = FairQueue(per_tenant=3)
        loop = asyncio.get_running_loop()
        for tenant, n in (("A", 3), ("B", 2), ("C", 1)):
            for i in range(n):
                q.put(_Item(f"{tenant}{i}", 1, loop.create_future(), tenant=tenant))
        with pytest.raises(asyncio.QueueFull):
            q.put(_Item("A3", 1, loop.create_future(), tenant="A"))
        order = [q.get_nowait().payload for _ in range(6)]
        q.put(_Item("D0", 1, loop.create_future(), tenant="D"))
        back = q.get_nowait()
        q.put_back(back)  # taken too early: first again
        assert q.get_nowait().payload == "D0"
        q.close()
        assert await q.get() is None
        return order

    assert asyncio.run(main()) == ["A0", "B0", "C0", "A1", "B1", "A2"]


def test_batcher_counts_rows_not_requests():
    seen: list[list[int]] = []

    async def main():
        b = Batcher("t", _recording(seen), max_batch_size=5, max_delay_s=0.05)
        await asyncio.gather(b.submit(1, rows=3), b.submit(2, rows=3), b.submit(3, rows=2))
        await b.close()

    asyncio.run(main())
    assert seen == [[1], [2, 3]]  # 3 + 3 would pass 5 rows: the second request waits


def test_full_queue_refuses_at_once_and_accepted_work_finishes():
    seen: list[list[int]] = []

    async def main():
        b = Batcher("t", _recording(seen, pause=0.2), max_batch_size=1, max_delay_s=0, max_queue=2)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.05)  # the worker holds request 0; two more fill the queue
        queued = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(Overloaded, match="queue full"):
            await b.submit(3)
        refused_after = time.perf_counter() - started
        answers = await asyncio.gather(first, *queued)
        await b.close()
        return answers, refused_after

    answers, refused_after = asyncio.run(main())
    assert answers == [0, 10, 20]
    assert refused_after < 0.2  # refused without waiting for the busy model


def test_timeout_gives_up_and_skips_the_abandoned_request():
    seen: list[list[int]] = []

    async def main():
        b = Batcher("t", _recording(seen, pause=0.3), max_batch_size=1, max_delay_s=0)
        slow = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.05)
        with pytest.raises(RequestTimeout, match="did not answer"):
            await b.submit(1, timeout=0.05)
        assert await slow == 0
        await b.close()

    asyncio.run(main())
    assert seen == [[0]]  # request 1 was abandoned before it ran


def test_failures_reach_only_their_requests():
    def run(payloads):
        return [ValueError("bad") if p < 0 else p for p in payloads]

    async def main():
        b = Batcher("t", run, max_batch_size=8, max_delay_s=0.02)
        results = await asyncio.gather(b.submit(1), b.submit(-1), return_exceptions=True)
        await b.close()
        return results

    ok, bad = asyncio.run(main())
    assert ok == 1 and isinstance(bad, ValueError)


def test_instances_run_batches_side_by_side_and_drain_on_close():
    # Two instances: while one sleeps in its batch, the other takes the next from the queue.
    seen: list[list[int]] = []
    threads: set[str] = set()

    def run(payloads):
        import threading

        threads.add(threading.current_thread().name)
        return _recording(seen, pause=0.2)(payloads)

    async def main():
        b = Batcher("t", run, max_batch_size=2, max_delay_s=0, instances=2)
        started = time.perf_counter()
        answers = await asyncio.gather(*(b.submit(i) for i in range(4)))
        elapsed = time.perf_counter() - started
        late = asyncio.ensure_future(b.submit(9))
        await asyncio.sleep(0)
        await b.close()  # the queued request is still answered
        return answers, elapsed, await late

    answers, elapsed, late = asyncio.run(main())
    assert answers == [0, 10, 20, 30] and late == 90
    assert sorted(len(batch) for batch in seen[:2]) == [2, 2]
    assert elapsed < 0.38  # two batches of 0.2 s at once, not one after the other (0.4 s)
    assert len(threads) == 2


def test_instances_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Batcher("t", lambda ps: ps, instances=0)


def test_batch_function_falls_back_per_request(shared_wrappers):
    # One payload the wrapper refuses must not spoil the others in its batch.
    model = shared_wrappers.get_or_load(("digits-cnn",))["digits-cnn"]
    run = batch_function(model, "digits")
    good = load_digits().data[:3].astype(np.float32)
    results = run([good, np.full((1, 64), 99, np.float32), good[:1]])
    assert isinstance(results[1], MaaslabError) and "0..16" in str(results[1])
    np.testing.assert_allclose(results[0]["probabilities"], model.predict(good).probabilities)
    assert results[2]["probabilities"].shape == (1, 10)


def _post(client, url, rows):
    body = {
        "inputs": [
            {
                "name": "pixels",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    return client.post(url + "/v2/models/digits-cnn/infer", json=body)


async def _burst(url: str, batches: list[np.ndarray]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(_post(client, url, b) for b in batches))


def _batch_sizes(url: str) -> tuple[float, float]:
    # (rows, batches) of digits-cnn from the batch-size histogram
    text = httpx.get(url + "/metrics").text
    rows = count = 0.0
    for line in text.splitlines():
        if line.startswith('maaslab_batch_size_sum{model="digits-cnn"}'):
            rows = float(line.split()[-1])
        if line.startswith('maaslab_batch_size_count{model="digits-cnn"}'):
            count = float(line.split()[-1])
    return rows, count


def test_concurrent_requests_are_batched_over_http(start_server, shared_wrappers):
    srv = start_server(models=["digits-cnn"], max_batch_size=64, max_delay_ms=100)
    pixels = load_digits().data[:24].astype(np.float32)
    parts = [
        pixels[i : i + n] for i, n in zip((0, 1, 3, 6, 10, 15), (1, 2, 3, 4, 5, 9), strict=True)
    ]
    replies = asyncio.run(_burst(srv.url, parts))
    model = shared_wrappers["digits-cnn"]
    for part, reply in zip(parts, replies, strict=True):
        got = np.asarray(reply.json()["outputs"][0]["data"]).reshape(len(part), 10)
        np.testing.assert_allclose(got, model.predict(part).probabilities, atol=1e-6)
    rows, batches = _batch_sizes(srv.url)
    assert rows == 24 and batches < len(parts)


def test_two_instances_answer_text_models_as_one(start_server, shared_wrappers):
    # Two instances tokenize and run in two threads at once; every answer must still be the
    # model's own, in the order asked.
    from maaslab.reviews import load_reviews

    srv = start_server(models=["sentiment-minilm"], instances=2, max_batch_size=4, max_delay_ms=1)
    texts = list(load_reviews("test").texts[:48])

    async def main():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        srv.url + "/v2/models/sentiment-minilm/infer",
                        json={
                            "inputs": [
                                {"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}
                            ]
                        },
                    )
                    for t in texts
                )
            )

    replies = asyncio.run(main())
    assert [r.status_code for r in replies] == [200] * len(texts)
    got = np.array([r.json()["outputs"][0]["data"] for r in replies])
    want = shared_wrappers["sentiment-minilm"].predict(texts).probabilities
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_no_batching_runs_requests_alone(start_server):
    srv = start_server(models=["digits-cnn"], batching=False)
    pixels = load_digits().data[:6].astype(np.float32)
    replies = asyncio.run(_burst(srv.url, [pixels[i : i + 1] for i in range(6)]))
    assert all(r.status_code == 200 for r in replies)
    assert _batch_sizes(srv.url) == (6.0, 6.0)


def _slow_down(srv, seconds: float) -> None:
    batcher = srv.app.state.models["digits-cnn"].batcher
    run = batcher.run

    def slow(payloads):
        time.sleep(seconds)
        return run(payloads)

    batcher.run = slow


def test_overload_answers_503_fast_and_every_accepted_request(start_server):
    srv = start_server(models=["digits-cnn"], batching=False, max_queue=2)
    _slow_down(srv, 0.5)
    row = load_digits().data[:1].astype(np.float32)

    async def timed(client):
        started = time.perf_counter()
        reply = await _post(client, srv.url, row)
        return reply, time.perf_counter() - started

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(timed(client) for _ in range(10)))

    results = asyncio.run(main())
    ok = [r for r, _ in results if r.status_code == 200]
    refused = [(r, s) for r, s in results if r.status_code == 503]
    assert len(ok) + len(refused) == 10 and 2 <= len(ok) < 10  # queue of 2 (+1 running)
    for reply, seconds in refused:
        assert reply.headers["Retry-After"] == "1" and "overloaded" in reply.json()["error"]
        assert seconds < 0.5  # refused while the model was still busy, not after waiting
    assert httpx.get(srv.url + "/v2/health/ready").status_code == 200
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'maaslab_requests_total{code="503"' in metrics
    assert f'maaslab_rejected_total{{model="digits-cnn"}} {len(refused)}.0' in metrics
    assert f'maaslab_rejected_seconds_count{{model="digits-cnn"}} {len(refused)}.0' in metrics


def test_a_full_queue_refuses_before_the_body_is_read(start_server):
    # Once the queue is full, even a body that is not JSON at all gets the 503, not a 400:
    # the refusal comes from the path alone, and costs no parsing (FullQueueMiddleware).
    srv = start_server(models=["digits-cnn"], batching=False, max_queue=1)
    batcher = srv.app.state.models["digits-cnn"].batcher
    run, release = batcher.run, threading.Event()

    def held(payloads):  # the running request holds the model until the junk is answered
        release.wait(30)
        return run(payloads)

    batcher.run = held
    row = load_digits().data[:1].astype(np.float32)

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:

            async def until(condition) -> None:  # 10 s at most on a busy machine
                for _ in range(1000):
                    if condition():
                        return
                    await asyncio.sleep(0.01)

            # one request running (held), then one queued: a queue of one is full. Sent together,
            # the second can find the first still queued and be refused itself.
            busy = [asyncio.ensure_future(_post(client, srv.url, row))]
            try:
                await until(lambda: batcher.in_flight == 1)
                busy.append(asyncio.ensure_future(_post(client, srv.url, row)))
                await until(batcher.full)
                assert batcher.full(), "the two requests never filled the queue"
                junk = await client.post(
                    srv.url + "/v2/models/digits-cnn/infer",
                    content=b"{not json",
                    headers={"content-type": "application/json"},
                )
            finally:
                release.set()
            return junk, await asyncio.gather(*busy)

    junk, busy = asyncio.run(main())
    assert junk.status_code == 503 and junk.headers["retry-after"] == "1"
    assert "overloaded" in junk.json()["error"]
    assert [r.status_code for r in busy] == [200, 200]
    bad = httpx.post(srv.url + "/v2/models/digits-cnn/infer", content=b"{not json")
    assert bad.status_code == 400  # with room in the queue the body is checked as before
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'maaslab_rejected_total{model="digits-cnn"} 1.0' in metrics
    line = (
        'maaslab_requests_total{code="503",endpoint="/v2/models/{name}/infer",model="digits-cnn"}'
    )
    assert line + " 1.0" in metrics


def test_request_timeout_is_504(start_server):
    srv = start_server(models=["digits-cnn"], request_timeout_s=0.2)
    _slow_down(srv, 0.6)
    with httpx.Client(timeout=10) as client:
        reply = _post(client, srv.url, load_digits().data[:1].astype(np.float32))
    assert reply.status_code == 504 and "did not answer within 0.2 s" in reply.json()["error"]


class _FakeGpuClassifier:
    """A two-class 'text' model that claims to run on CUDA (only its device label is fake)."""

    def __init__(self, row0: float, row1: float) -> None:
        self.device = torch.device("cuda")
        self.model = torch.nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.model.weight[0] = row0
            self.model.weight[1] = row1

    def predict(self, texts):
        x = torch.ones(len(texts), 4, dtype=self.model.weight.dtype)
        with torch.no_grad():
            proba = torch.softmax(self.model(x).float(), 1).numpy()
        return SimpleNamespace(probabilities=proba, labels=tuple(proba.argmax(1)))


def test_half_precision_only_where_answers_hold():
    kept = _FakeGpuClassifier(0.25, 0.125)  # exact in fp16: same answers
    assert try_half(kept, "sentiment", ["a", "b"]) == "fp16"
    assert kept.model.weight.dtype == torch.float16
    # 1000.1 rounds to 1000.0 in fp16 (spacing 0.5 there): the probabilities move, so fp32 stays
    lost = _FakeGpuClassifier(1000.1, 1000.0)
    assert try_half(lost, "sentiment", ["a", "b"]) == "fp32"
    assert lost.model.weight.dtype == torch.float32
    assert try_half(kept, "digits", ["a"]) == "fp32"  # digits never switch


def test_models_load_and_run_on_the_same_compute_thread(monkeypatch, shared_wrappers):
    # One thread for loading and running keeps one OpenMP team in the process (see batching).
    import threading

    from fastapi.testclient import TestClient

    import maaslab.auto
    from maaslab.serve.app import create_app
    from maaslab.serve.config import ServeConfig

    real = shared_wrappers.get_or_load(("digits-cnn",))["digits-cnn"]
    threads: dict[str, str] = {}

    def load(spec, device=None):
        threads["load"] = threading.current_thread().name
        return real

    def predict(x):
        threads["run"] = threading.current_thread().name
        return type(real).predict(real, x)

    monkeypatch.setattr(maaslab.auto, "load", load)
    monkeypatch.setattr(real, "predict", predict)
    app = create_app(ServeConfig(models=("digits-cnn",), port=0, device="cpu"))
    pixels = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}
    with TestClient(app) as client:
        reply = client.post("/v2/models/digits-cnn/infer", json={"inputs": [pixels]})
    assert reply.status_code == 200
    assert threads["load"] == threads["run"] and threads["load"].startswith("maaslab-compute")
