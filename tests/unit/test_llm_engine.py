"""The engine against transformers: its paged forward gives transformers' logits, its greedy
decoding gives `generate()`'s tokens, and scheduling (batching, chunked prefill, preemption,
prefix caching) never changes what a request gets."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineConfig, LLMEngine
from maaslab.llm.model import KEY_TILE, MIN_QUERIES, MIN_ROWS, Chunk, PagedModel, greedy_reference
from maaslab.llm.sequence import SamplingParams

VOCAB = 300


def tiny_llama(hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    """A small random Llama with the test vocabulary (GQA: heads share kv_heads)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def tiny(family: str) -> torch.nn.Module:
    """The test model of a family: a small Llama, or a small GPT-2."""
    if family == "llama":
        return tiny_llama()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def hf(request):
    return tiny(request.param)


@pytest.fixture(scope="module")
def paged(hf):
    return PagedModel(hf)


def prompts(count: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 60, (count,), generator=g).tolist()
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def test_paged_logits_equal_transformers_in_chunks_and_in_a_batch(hf, paged):
    a, b = prompts(2)[0] + prompts(1, seed=5)[0], prompts(1, seed=9)[0]
    pool = paged.new_pool(num_blocks=64, block_size=8)
    table_a, table_b = [9, 3, 14, 1, 30, 7, 2, 11, 20], [40, 41, 42, 43, 44, 45, 46, 47]
    cut = len(a) // 2
    first = paged.forward([Chunk(a[:cut], 0, table_a), Chunk(b, 0, table_b)], pool, all_logits=True)
    second = paged.forward([Chunk(a[cut:], cut, table_a)], pool, all_logits=True)
    with torch.inference_mode():
        want_a = hf(torch.tensor([a])).logits[0]
        want_b = hf(torch.tensor([b])).logits[0]
    got_a = torch.cat([first[:cut], second])
    assert (got_a - want_a).abs().max() <= 1e-4
    assert (first[cut:] - want_b).abs().max() <= 1e-4


def test_a_token_gets_the_same_bits_in_a_long_chunk_or_decoded_among_others(paged):
    seq = prompts(1, seed=3)[0] * 3
    table = list(range(20, 40))
    whole = paged.forward([Chunk(seq, 0, table)], paged.new_pool(64, 8), all_logits=True)
    pool = paged.new_pool(64, 8)
    rows = [paged.forward([Chunk(seq[:5], 0, table)], pool, all_logits=True)]
    for i in range(5, len(seq)):
        other = Chunk(prompts(1, seed=i)[0][: i % 7 + 1], 0, [0, 1])
        rows.append(paged.forward([other, Chunk([seq[i]], i, table)], pool)[1:])
    assert torch.equal(whole, torch.cat(rows))


def test_chunks_of_every_length_in_one_step_get_the_bits_they_get_alone(paged):
    asks = [prompts(1, seed=20 + n)[0][:n] for n in (1, 2, 3, 5, 9, 17, 1)]
    tables = [list(range(8 * i, 8 * i + 8)) for i in range(len(asks))]
    together = paged.forward(
        [Chunk(a, 0, t) for a, t in zip(asks, tables, strict=True)],
        paged.new_pool(64, 8),
        all_logits=True,
    )
    alone = [paged.forward([Chunk(a, 0, [0, 1, 2])], paged.new_pool(8, 8), True) for a in asks]
    assert torch.equal(together, torch.cat(alone))


def test_the_fused_projections_give_the_separate_modules_bits():
    model = PagedModel(tiny_llama())
    h = torch.randn(20, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for block, fused in zip(model.hf.model.layers, model.fused, strict=True):
            a, m = block.self_attn, block.mlp
            parts = [a.q_proj(h), a.k_proj(h), a.v_proj(h)]
            assert torch.equal(torch.nn.functional.linear(h, fused.qkv), torch.cat(parts, 1))
            parts = [m.gate_proj(h), m.up_proj(h)]
            assert torch.equal(torch.nn.functional.linear(h, fused.gate_up), torch.cat(parts, 1))


def test_the_products_batch_invariance_rests_on_give_a_row_the_same_bits_at_any_count():
    # model.py's premise on this CPU: a linear layer's row is the same with MIN_ROWS rows or
    # more; attention's products (keys by queries, a tile's weights by values) give a query
    # the same bits among MIN_QUERIES or more.
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(48, 256, generator=g), torch.randn(704, 256, generator=g)
    full = torch.nn.functional.linear(x, w)
    assert all(
        torch.equal(torch.nn.functional.linear(x[:n], w), full[:n]) for n in range(MIN_ROWS, 48)
    )
    keys, queries = torch.randn(6, 160, 32, generator=g), torch.randn(6, 32, 48, generator=g)
    full = keys @ queries
    assert all(
        torch.equal(keys @ queries[..., :n].contiguous(), full[..., :n])
        for n in range(MIN_QUERIES, 48)
    )
    weights, values = torch.randn(60, KEY_TILE, 48, generator=g), torch.randn(60, KEY_TILE, 32)
    full = weights.transpose(1, 2) @ values
    assert all(
        torch.equal(weights[..., :n].contiguous().transpose(1, 2) @ values, full[:, :n])
        for n in range(MIN_QUERIES, 48)
    )


def test_greedy_decoding_equals_transformers_generate(hf, paged):
    asks = prompts(6)
    engine = LLMEngine(
        paged, EngineConfig(block_size=8, num_blocks=128, prefill_chunk=16, max_batched_tokens=40)
    )
    got = engine.generate(asks, SamplingParams(max_tokens=24, temperature=0, ignore_eos=True))
    assert got == [greedy_reference(hf, p, 24) for p in asks]


def seeded(count: int) -> list[SamplingParams]:
    return [
        SamplingParams(max_tokens=12 + 3 * i, temperature=0.7 + 0.1 * (i % 5), top_p=0.9, seed=i)
        for i in range(count)
    ]


def test_a_seeded_request_gets_the_same_tokens_alone_or_batched_with_15_others(paged):
    asks, params = prompts(16), seeded(16)
    config = EngineConfig(block_size=8, num_blocks=256)
    batched = LLMEngine(paged, config).generate(asks, params)
    alone = [
        LLMEngine(paged, config).generate([p], [s])[0] for p, s in zip(asks, params, strict=True)
    ]
    assert batched == alone
    assert len({tuple(t) for t in batched}) == 16


def test_preemption_under_a_tiny_block_budget_gives_the_same_tokens(paged):
    asks, params = prompts(8), seeded(8)
    roomy = LLMEngine(paged, EngineConfig(block_size=4, num_blocks=512)).generate(asks, params)
    tight = LLMEngine(
        paged, EngineConfig(block_size=4, num_blocks=24, prefill_chunk=8, max_batched_tokens=16)
    )
    assert tight.generate(asks, params) == roomy
    assert tight.stats().preemptions > 0
    assert tight.stats().blocks.used == 0  # every block came back


def test_a_shared_system_prompt_is_computed_once_and_changes_nothing(paged):
    system = prompts(1, seed=11)[0] * 2  # 2 x up to 59 tokens, several full blocks
    asks = [system + q for q in prompts(6, seed=12)]
    params = SamplingParams(max_tokens=8, temperature=0)
    plain = LLMEngine(paged, EngineConfig(block_size=8, prefix_caching=False))
    cached = LLMEngine(paged, EngineConfig(block_size=8, prefix_caching=True))
    first = cached.generate(asks[:1], params)  # its blocks are cached once computed
    rest = cached.generate(asks[1:], params)
    assert first + rest == plain.generate(asks, params)
    stats = cached.stats().blocks
    assert stats.prefix_hits >= 5 * (len(system) // 8) and plain.stats().blocks.prefix_hits == 0


def test_an_aborted_request_gives_its_blocks_back_at_once(paged):
    engine = LLMEngine(paged, EngineConfig(block_size=8, num_blocks=64, prefix_caching=False))
    keep = engine.add_request(prompts(1)[0], SamplingParams(max_tokens=50, temperature=0))
    drop = engine.add_request(prompts(1, seed=2)[0], SamplingParams(max_tokens=50, temperature=0))
    engine.step()
    used = engine.stats().blocks.used
    engine.abort(drop)
    assert engine.stats().blocks.used < used
    outputs = [o.seq_id for _ in range(3) for o in engine.step()]
    assert set(outputs) == {keep}


def test_continuous_batching_admits_at_every_step_static_only_into_an_empty_batch(paged):
    def first_token_steps(continuous: bool) -> list[int]:
        steps: list[int] = []
        engine = LLMEngine(
            paged,
            EngineConfig(block_size=8, max_running=2, continuous_batching=continuous),
        )
        lengths = [4, 30, 4, 4]  # max_tokens: one long request holds its batch
        ids = [
            engine.add_request(p, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
            for p, n in zip(prompts(4), lengths, strict=True)
        ]
        seen: dict[int, int] = {}
        while engine.has_work:
            for out in engine.step():
                seen.setdefault(out.seq_id, engine.steps)
        steps = [seen[i] for i in ids]
        return steps

    continuous, static = first_token_steps(True), first_token_steps(False)
    assert continuous[2] < 10  # joins as soon as the short one leaves
    assert static[2] > 30  # waits for the long one to finish its batch


def test_chunked_prefill_keeps_running_streams_decoding(paged):
    engine = LLMEngine(paged, EngineConfig(block_size=8, prefill_chunk=16, max_batched_tokens=24))
    stream = engine.add_request([5, 6, 7], SamplingParams(max_tokens=40, temperature=0))
    engine.step()
    engine.add_request(prompts(1, seed=4)[0] * 4, SamplingParams(max_tokens=2, temperature=0))
    got = [sum(o.seq_id == stream for o in engine.step()) for _ in range(6)]
    assert got == [1] * 6  # one token per step while the long prompt is prefilled beside it


def test_end_of_text_and_stop_tokens_end_a_sequence(hf, paged):
    ask = prompts(1)[0]
    greedy = greedy_reference(hf, ask, 20)
    end = greedy[-1]  # the sequence ends at this token's first appearance
    want = greedy[: greedy.index(end) + 1]
    engine = LLMEngine(paged, EngineConfig(block_size=8), eos_token_ids=(end,))
    assert engine.generate([ask], SamplingParams(max_tokens=20, temperature=0)) == [want]
    no_eos = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, stop_token_ids=(end,))
    assert engine.generate([ask], no_eos)[0] == want
    ignored = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    assert engine.generate([ask], ignored)[0] == greedy


@pytest.mark.parametrize(
    "prompt, params, words",
    [
        ([5] * 250, SamplingParams(max_tokens=10), "context of 256"),
        ([], SamplingParams(), "empty"),
        ([VOCAB], SamplingParams(), "token ids"),
    ],
)
def test_requests_that_cannot_fit_are_refused_with_a_reason(paged, prompt, params, words):
    with pytest.raises(MaaslabError, match=words):
        LLMEngine(paged).add_request(prompt, params)


@pytest.mark.parametrize(
    "bad", [{"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_k": 0}, {"seed": -1}]
)
def test_sampling_params_are_checked(bad):
    with pytest.raises(MaaslabError):
        SamplingParams(**bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_engine_computes_the_cpus_logits_and_samples_with_cpu_generators(hf, paged):
    family = "llama" if hf.config.model_type == "llama" else "gpt2"
    gpu = PagedModel(tiny(family).cuda())
    asks = prompts(4, seed=3)
    tables = [list(range(8 * i, 8 * i + 8)) for i in range(4)]
    chunks = [Chunk(p, 0, t) for p, t in zip(asks, tables, strict=True)]
    want = paged.forward(chunks, paged.new_pool(num_blocks=32, block_size=8))
    got = gpu.forward(chunks, gpu.new_pool(num_blocks=32, block_size=8))
    assert got.device.type == "cuda" and torch.allclose(got.cpu(), want, atol=1e-4)
    engine = LLMEngine(gpu, EngineConfig(num_blocks=64, block_size=8))
    seeded = SamplingParams(max_tokens=12, temperature=0.9, seed=7, ignore_eos=True)
    out = engine.generate(asks, seeded)  # sampled from the GPU's logits, moved to the CPU
    assert [len(o) for o in out] == [12] * 4 and engine.generate(asks, seeded) == out
