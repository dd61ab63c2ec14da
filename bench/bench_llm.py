"""The language-model engine, measured side by side in one run (lesson 15).

P10: 16 requests arriving at once, output lengths 32-256: the engine with continuous batching
vs the same engine admitting one request at a time (output tokens/s, goal >= 6x; TTFT p99 not
worse), and vs serving without a KV cache, each request on its own (every token recomputes the
whole sequence with transformers' forward; goal >= 15x).
P12: 64 requests arriving at once, output lengths 32-256: the engine (every request running at
once, as its paged KV blocks allow, a finished one leaving at the next step) vs transformers'
`generate()` with its KV cache on static batches of 16 (left padded, each batch running to its
longest request) on the same requests (goal >= 2x); also the engine held to 16 running, the
static batches' size, to show what the scheduling alone buys.
P13: per-token latency of one sequence at a 512-token context: the engine's decode step (KV
cache) vs a forward pass over the whole context (no cache) (goal >= 5x).
P14: 16 requests sharing a 256-token system prompt that an earlier request left in the cache:
TTFT with prefix caching on vs off (goal >= 3x).
Speculative decoding (with --draft FOLDER): greedy tokens/s with and without the draft, the
acceptance rate and the tokens per target pass, reported as measured.
P11: the same 16 requests streamed over HTTP to `python -m maaslab serve` (started here with its
defaults; the load generator maaslab.serve.llm_load in this process) vs the engine in this
process with the same settings and torch threads: output tokens/s (goal >= 0.8); also vs the
engine here at this run's thread count.

Every engine uses one thread pool (torch's threads, --threads), greedy decoding and
ignore_eos, so every method produces exactly the requested number of tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from maaslab.device import describe
from maaslab.llm.engine import EngineConfig, LLMEngine
from maaslab.llm.measure import Workload, drive, report
from maaslab.llm.model import PagedModel
from maaslab.paths import MODELS_DIR
from maaslab.runtime import torch_threads
from maaslab.serve.config import ServeConfig
from maaslab.serve.llm_load import run_llm_load
from maaslab.serve.models import served_name
from maaslab.serve.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]


def engine(model: PagedModel, draft: PagedModel | None = None, **config) -> LLMEngine:
    """A fresh engine with enough blocks for the whole workload."""
    config.setdefault("num_blocks", 2048)
    config.setdefault("block_size", 16)
    return LLMEngine(model, EngineConfig(**config), draft=draft)


def no_cache_tokens_per_s(model: PagedModel, plan: list) -> float:
    """Each request alone; every token recomputes the whole sequence (no KV cache)."""
    tokens, started = 0, time.perf_counter()
    with torch.inference_mode():
        for _, prompt, max_tokens in plan:
            ids = torch.tensor([prompt])
            for _ in range(max_tokens):
                nxt = model.hf(ids, use_cache=False).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
                tokens += 1
    return tokens / (time.perf_counter() - started)


def generate_static_tokens_per_s(model: PagedModel, plan: list, batch: int = 16) -> float:
    """transformers generate() with its KV cache on static, left-padded batches."""
    hf, pad = model.hf, 0
    tokens, started = 0, time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(plan), batch):
            group = plan[first : first + batch]
            width = max(len(p) for _, p, _ in group)
            ids = torch.tensor([[pad] * (width - len(p)) + p for _, p, _ in group])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for _, p, _ in group])
            longest = max(n for _, _, n in group)
            hf.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=pad,
            )
            tokens += sum(n for _, _, n in group)  # the tokens the requests asked for
    return tokens / (time.perf_counter() - started)


def per_token_latency(model: PagedModel, context: int, steps: int = 20) -> tuple[float, float]:
    """(seconds per token with the engine's KV cache, without a cache) at this context."""
    prompt = list(range(10, 10 + context - steps))
    eng = engine(model)
    seq = eng.add_request(prompt, _greedy(steps))
    eng.step()  # the prefill
    started = time.perf_counter()
    while eng.has_work:
        eng.step()
    cached = (time.perf_counter() - started) / (steps - 1)
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        started = time.perf_counter()
        for _ in range(steps):
            model.hf(ids, use_cache=False)
        plain = (time.perf_counter() - started) / steps
    del seq
    return cached, plain


def served_and_in_process(model: PagedModel, folder: str, workload: Workload):
    """(served report, its torch threads, in-process reports by thread count) of one workload.

    The server runs with its own defaults (one core left to its event loop, see
    ServeConfig.torch_threads), alone while it is measured, and is stopped before the engine
    runs here with the same engine settings, at the server's thread count and at this run's;
    a few requests warm each up first."""
    config = ServeConfig(models=(folder,), port=0)
    threads = config.torch_threads(os.cpu_count(), os.environ, engine=True)
    threads = threads or torch.get_num_threads()
    name = served_name(folder)
    warm_up = Workload(requests=2, prompt_tokens=(8, 8), output_tokens=(8, 8), vocab=workload.vocab)
    with ServerProcess(config) as server:
        run_llm_load(server.url, name, warm_up)
        served = run_llm_load(server.url, name, workload)
    if served.report is None or served.refused or served.errors:
        raise SystemExit(f"P11: the served run failed: {served.line()}")
    here = {}
    for count in sorted({threads, torch.get_num_threads()}):
        with torch_threads(count):
            same = engine(model, max_running=config.effective_batch_size, num_blocks=512)
            drive(same, warm_up)
            here[count] = report(drive(same, workload))
    return served.report, threads, here


def _greedy(max_tokens: int):
    from maaslab.llm.sequence import SamplingParams

    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)


def prefix_ttft(model: PagedModel, caching: bool) -> float:
    """Median TTFT of 16 requests sharing a 256-token system prompt already seen once."""
    shared = Workload(requests=16, prompt_tokens=(16, 48), output_tokens=(8, 8), shared_prefix=256)
    plan = shared.draw()
    eng = engine(model, prefix_caching=caching)
    eng.generate([[*plan[0][1][:256], 11]], _greedy(1))  # an earlier request with the prompt
    timings = drive(eng, shared)
    return statistics.median(t.ttft for t in timings)


def main() -> None:
    """Run P10-P14 (and speculative decoding) and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(MODELS_DIR / "mini-llama"))
    parser.add_argument("--draft", default=None, help="a draft model folder (same tokenizer)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = PagedModel.from_folder(args.folder)
    vocab = (10, model.vocab_size - 1)
    print(describe().summary(), f"· {Path(args.folder).name}")
    figures: dict[str, float] = {}

    mixed = Workload(requests=16, prompt_tokens=(16, 64), output_tokens=(32, 256), vocab=vocab)
    plan = mixed.draw()
    continuous = report(drive(engine(model), mixed))
    alone = report(drive(engine(model), mixed, one_at_a_time=True))
    no_cache = no_cache_tokens_per_s(model, plan[:2])  # two requests: it is slow
    figures |= {
        "P10_continuous_tok_s": continuous.tokens_per_s,
        "P10_one_at_a_time_tok_s": alone.tokens_per_s,
        "P10_no_cache_tok_s": no_cache,
        "P10_ratio_vs_one_at_a_time": continuous.tokens_per_s / alone.tokens_per_s,
        "P10_ttft_p99_ratio": continuous.ttft["p99"] / alone.ttft["p99"],
        "P10_ratio_vs_no_cache": continuous.tokens_per_s / no_cache,
    }
    print(f"continuous batching: {continuous.line()}")
    print(f"one at a time:       {alone.line()}")
    print(f"no KV cache, alone:  {no_cache:,.0f} tok/s")
    print(
        f"P10 continuous / one at a time: {figures['P10_ratio_vs_one_at_a_time']:.1f}x "
        f"(goal >= 6), TTFT p99 ratio {figures['P10_ttft_p99_ratio']:.2f} (goal <= 1); "
        f"/ no cache: {figures['P10_ratio_vs_no_cache']:.1f}x (goal >= 15)"
    )

    served, threads, here = served_and_in_process(model, args.folder, mixed)
    figures |= {"P11_served_tok_s": served.tokens_per_s, "P11_server_threads": threads}
    print(f"served over HTTP ({threads} torch thread(s), the server's default): {served.line()}")
    for count, in_process in here.items():
        figures[f"P11_in_process_{count}_threads_tok_s"] = in_process.tokens_per_s
        print(f"same engine here, {count} thread(s): {in_process.line()}")
    figures["P11_ratio"] = served.tokens_per_s / here[threads].tokens_per_s
    best = max(r.tokens_per_s for r in here.values())
    figures["P11_ratio_vs_best_in_process"] = served.tokens_per_s / best
    print(
        f"P11 served / in process with the server's threads: {figures['P11_ratio']:.2f} "
        f"(goal >= 0.8); / the fastest in process: {figures['P11_ratio_vs_best_in_process']:.2f} "
        "(the load client and the server's event loop share these cores)"
    )

    many = Workload(requests=64, prompt_tokens=(16, 64), output_tokens=(32, 256), vocab=vocab)
    static = generate_static_tokens_per_s(model, many.draw(), batch=16)
    ours = report(drive(engine(model, max_running=64, max_batched_tokens=1024), many))
    capped = report(drive(engine(model, max_running=16), many))
    figures |= {
        "P12_engine_tok_s": ours.tokens_per_s,
        "P12_engine_16_running_tok_s": capped.tokens_per_s,
        "P12_generate_static_tok_s": static,
        "P12_ratio": ours.tokens_per_s / static,
        "P12_ratio_16_running": capped.tokens_per_s / static,
    }
    print(
        f"P12 64 requests: engine (all 64 running, as its KV blocks allow) "
        f"{ours.tokens_per_s:,.0f} tok/s / generate() static batches of 16 {static:,.0f} tok/s: "
        f"{figures['P12_ratio']:.1f}x (goal >= 2); the engine held to 16 running "
        f"{capped.tokens_per_s:,.0f} tok/s: {figures['P12_ratio_16_running']:.1f}x"
    )

    context = min(512, model.context)
    cached, plain = per_token_latency(model, context)
    figures |= {"P13_cached_ms": cached * 1e3, "P13_no_cache_ms": plain * 1e3}
    figures["P13_ratio"] = plain / cached
    print(
        f"P13 per-token latency at {context} tokens: {cached * 1e3:.1f} ms with the KV cache, "
        f"{plain * 1e3:.1f} ms without: {figures['P13_ratio']:.1f}x (goal >= 5)"
    )

    on, off = prefix_ttft(model, True), prefix_ttft(model, False)
    figures |= {"P14_ttft_cached_ms": on * 1e3, "P14_ttft_uncached_ms": off * 1e3}
    figures["P14_ratio"] = off / on
    print(
        f"P14 shared 256-token system prompt, TTFT median: {on * 1e3:.0f} ms cached, "
        f"{off * 1e3:.0f} ms not: {figures['P14_ratio']:.1f}x (goal >= 3)"
    )

    if args.draft:
        draft = PagedModel.from_folder(args.draft)
        greedy = Workload(requests=8, prompt_tokens=(16, 64), output_tokens=(64, 64), vocab=vocab)
        without = report(drive(engine(model), greedy))
        spec = engine(model, draft, speculative_tokens=4)
        with_draft = report(drive(spec, greedy))
        stats = spec.stats()
        figures |= {
            "spec_acceptance": stats.acceptance_rate,
            "spec_tokens_per_pass": stats.tokens_per_check,
            "spec_speedup": with_draft.tokens_per_s / without.tokens_per_s,
        }
        print(
            f"speculative (k=4): acceptance {stats.acceptance_rate:.2f}, "
            f"{figures['spec_tokens_per_pass']:.2f} tokens per target pass, "
            f"speed-up {figures['spec_speedup']:.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
