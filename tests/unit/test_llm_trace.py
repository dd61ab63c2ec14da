"""The engine's step recorder against what the engine did (its own Step objects, seen through a
callback beside the Trace), and the demo runs of the Engine view."""

from __future__ import annotations

import re
import threading
from dataclasses import replace

import pytest
import torch

from maaslab.errors import MaaslabError
from maaslab.llm.demo import PRESETS, DemoModel, DemoRun, Switches, demo_model, run_demo, tiny_llama
from maaslab.llm.engine import EngineConfig, LLMEngine
from maaslab.llm.sequence import SamplingParams
from maaslab.llm.trace import Trace, TraceData

GREEDY = dict(temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


def prompts(count: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (count,), generator=g).tolist()
    return [torch.randint(10, 500, (n,), generator=g).tolist() for n in lengths]


def watched(engine: LLMEngine) -> tuple[Trace, list]:
    """A Trace on the engine, and the engine's own Steps as it ran them (id -> n, preempted)."""
    steps: list = []
    engine.on_step = lambda step: steps.append(
        ({s.id: n for s, n in step.work}, {s.id for s in step.preempted})
    )
    return Trace().attach(engine), steps


def run(engine: LLMEngine, asks: list[list[int]], max_tokens: list[int]) -> list[list[int]]:
    for p, n in zip(asks, max_tokens, strict=True):
        engine.add_request(p, SamplingParams(max_tokens=n, **GREEDY))
    out: dict[int, list[int]] = {}
    while engine.has_work:
        for o in engine.step():
            out.setdefault(o.seq_id, []).append(o.token)
    return [out[i] for i in sorted(out)]


def phases(data: TraceData, seq_id: int) -> str:
    """The sequence's phases over the kept steps, one letter each (w p d x f, '.' before it)."""
    letters = {"waiting": "w", "prefill": "p", "decode": "d", "preempted": "x", "finished": "f"}
    return "".join(letters[c.phase] if (c := data.cell(rec, seq_id)) else "." for rec in data.steps)


def test_every_step_shows_what_the_engine_computed_and_each_request_prefills_then_decodes(model):
    config = EngineConfig(block_size=8, num_blocks=256, max_running=3, prefill_chunk=16)
    engine = LLMEngine(model, config)
    trace, steps = watched(engine)
    asks, lengths = prompts(5, seed=1), [6, 9, 4, 12, 7]
    tokens = run(engine, asks, lengths)
    data = trace.snapshot()
    assert [rec.step for rec in data.steps] == list(range(1, len(steps) + 1)) and data.dropped == 0
    for rec, (work, preempted) in zip(data.steps, steps, strict=True):
        computing = {i: c.tokens for i, c in rec.cells.items() if c.phase in ("prefill", "decode")}
        assert computing == work and not preempted
        assert all(c.phase == "waiting" for i, c in rec.cells.items() if i not in work)
    for i, (prompt, n) in enumerate(zip(asks, lengths, strict=True)):
        assert re.fullmatch(r"w*p+d*f*", phases(data, i).lstrip(".")), phases(data, i)
        cells = [rec.cells[i] for rec in data.steps if i in rec.cells]
        assert sum(c.tokens for c in cells if c.phase == "prefill") == len(prompt)
        assert sum(c.phase == "decode" for c in cells) == n - 1
        assert sum(c.produced for c in cells) == n == len(tokens[i])
        req = data.requests[i]
        assert req.finished_step == max(rec.step for rec in data.steps if i in rec.cells)
        assert len(req.timing.token_times) == n and req.timing.ttft > 0
        assert req.finish_reason == "length" and req.preemptions == 0
    assert phases(data, 4).startswith("w")  # max_running 3: the fifth one queued first
    assert data.stats == engine.stats()


def test_preemption_under_a_tiny_block_budget_is_shown_and_followed_by_a_recompute(model):
    asks, lengths = prompts(6, seed=2), [20, 18, 25, 16, 22, 19]
    roomy = run(LLMEngine(model, EngineConfig(block_size=4, num_blocks=512)), asks, lengths)
    tight = EngineConfig(block_size=4, num_blocks=20, prefill_chunk=8, max_batched_tokens=16)
    engine = LLMEngine(model, tight)
    trace, steps = watched(engine)
    assert run(engine, asks, lengths) == roomy  # preemption changes no token
    data = trace.snapshot()
    shown = [{i for i, c in rec.cells.items() if c.phase == "preempted"} for rec in data.steps]
    assert shown == [preempted for _, preempted in steps]
    assert sum(map(len, shown)) == engine.stats().preemptions > 0
    for i in range(len(asks)):
        line = phases(data, i)
        assert data.requests[i].preemptions == line.count("x")
        for after in re.findall(r"x(w*)(.)", line):  # it waits, then prefills again
            assert after[1] == "p"


def test_the_shared_system_prompt_is_held_once_by_many(model):
    result = run_demo(model, "shared system prompt", requests=8)
    data = result.trace.snapshot()
    system_blocks = 256 // 16
    busiest = max(data.maps, key=lambda m: len(m.shared))
    assert len(busiest.shared) == system_blocks
    assert all(len(busiest.owners[b]) >= 2 for b in busiest.shared)
    later = [r.cached_tokens for i, r in sorted(data.requests.items()) if i > 0]
    assert all(c == 256 for c in later)  # every block of the system prompt came from the cache
    admissions = [c for rec in data.steps for c in rec.cells.values() if c.cached]
    assert len(admissions) == 7 and result.stats.blocks.prefix_hits == 7 * system_blocks
    off = run_demo(model, "shared system prompt", Switches(prefix_caching=False), requests=8)
    plain = off.trace.snapshot()
    assert not any(m.shared or m.cached_free for m in plain.maps)
    assert all(r.cached_tokens == 0 for r in plain.requests.values())
    assert off.stats.steps > result.stats.steps  # every prompt computed whole, in chunks


def test_memory_is_bounded_to_the_latest_steps(model):
    trace = Trace(max_steps=10, max_maps=3)
    result = DemoRun(model, "chat", requests=8, trace=trace).run()
    data = trace.snapshot()
    assert len(data.steps) == 10 and len(data.maps) == 3
    assert data.steps[-1].step == result.stats.steps == data.dropped + 10
    assert [m.step for m in data.maps] == [rec.step for rec in data.steps[-3:]]
    oldest = data.steps[0].step
    assert all(r.finished_step >= oldest for r in data.requests.values())
    with pytest.raises(MaaslabError):
        Trace(max_steps=0)


def test_a_draft_brings_several_tokens_in_one_decode_step(model):
    demo = DemoModel(model, "tiny", "", draft=model)  # a perfect draft: every guess accepted
    on = run_demo(demo, "chat", Switches(speculative=True), requests=4)
    off = run_demo(demo, "chat", requests=4)
    data = on.trace.snapshot()
    produced = [c.produced for rec in data.steps for c in rec.cells.values()]
    assert max(produced) == PRESETS["chat"].config.speculative_tokens + 1
    for i, req in data.requests.items():
        assert len(req.timing.token_times) == req.max_tokens
        cells = [rec.cells[i] for rec in data.steps if i in rec.cells]
        assert sum(c.tokens for c in cells if c.phase == "prefill") == req.prompt_tokens
    assert on.stats.acceptance_rate == 1.0 and on.stats.steps < off.stats.steps


def test_static_batching_admits_only_into_an_empty_batch(model):
    data = run_demo(model, "chat", Switches(continuous_batching=False), requests=8).trace.snapshot()
    for prev, rec in zip(data.steps, data.steps[1:], strict=False):
        joined = [
            i
            for i, c in rec.cells.items()
            if c.phase == "prefill"
            and c.cached == 0
            and (prev.cells.get(i) is None or prev.cells[i].phase == "waiting")
        ]
        running = [  # computed in the step before and did not end in it
            i
            for i, c in prev.cells.items()
            if c.phase in ("prefill", "decode") and data.requests[i].finished_step != prev.step
        ]
        assert not (joined and running), f"step {rec.step}: {joined} joined {running}"


def test_stop_ends_a_run_after_the_current_step(model):
    stop = threading.Event()
    seen: list[str] = []

    def progress(line: str, fraction: float) -> None:
        seen.append(line)
        if len(seen) == 5:
            stop.set()

    result = DemoRun(model, "chat", requests=6).run(progress, stop)
    assert result.stopped and result.stats.steps == 5 and seen[0].startswith("step 1 · 0 of 6")
    assert "stopped" in result.line()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (
            {"preset": "shared system prompt", "num_blocks": 8},
            "needs 20 KV blocks.*give it at least 20 blocks",
        ),
        ({"preset": "chat", "switches": Switches(speculative=True)}, "draft"),
        ({"preset": "poetry"}, "no preset 'poetry'"),
        ({"preset": "chat", "requests": 99}, "1 to 32 requests"),
    ],
)
def test_settings_that_cannot_run_are_refused_with_what_to_change(model, kwargs, words):
    preset = kwargs.pop("preset")
    with pytest.raises(MaaslabError, match=words):
        DemoRun(demo_model("/nonexistent/mini-llama"), preset, **kwargs)


def test_a_plan_is_the_same_every_time_and_fits_a_short_context():
    preset = PRESETS["shared system prompt"]
    plan = preset.plan(6, vocab=320, context=64)
    assert plan == preset.plan(6, vocab=320, context=64)
    assert all(len(p) + n <= 64 and max(p) < 320 for _, p, n in plan)
    prefixes = {tuple(p[:20]) for _, p, _ in plan}
    assert len(prefixes) == 1 and [s for s, _, _ in plan] == [0, 2, 4, 6, 8, 10]


def test_without_mini_llama_the_demo_runs_a_seeded_random_llama(tmp_path):
    before = torch.random.get_rng_state()
    demo = demo_model(tmp_path / "mini-llama", tmp_path / "draft")
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state kept
    assert "random Llama" in demo.note and demo.draft is None and "draft" in demo.no_draft
    same = tiny_llama(0).hf.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in demo.target.hf.state_dict().items())


def test_a_built_folder_and_its_draft_are_loaded(tmp_path, model):
    model.hf.save_pretrained(tmp_path / "target")
    model.hf.save_pretrained(tmp_path / "draft")
    demo = demo_model(tmp_path / "target", tmp_path / "draft")
    assert demo.name == "target" and demo.draft is not None and not demo.no_draft
    lonely = demo_model(tmp_path / "target", tmp_path / "none")
    assert lonely.draft is None and "none/" in lonely.no_draft
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(MaaslabError, match="pickle"):
        demo_model(tmp_path / "pickled")


def test_an_engine_given_as_it_is_runs_with_its_own_switches(model):
    config = EngineConfig(block_size=16, num_blocks=64, continuous_batching=False)
    engine = LLMEngine(model, replace(config, prefix_caching=False))
    demo = DemoRun(engine, "chat", Switches(prefix_caching=True), requests=3)
    assert demo.switches == Switches(continuous_batching=False, prefix_caching=False)
    result = demo.run()
    assert result.stats.blocks.prefix_queries == 0 and result.stats.steps == engine.steps
    assert result.report is not None and result.report.requests == 3
