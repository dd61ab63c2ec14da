"""The paged KV cache's block manager: tables, refcounts, prefix sharing, LRU eviction, a fuzz."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from maaslab.errors import MaaslabError
from maaslab.llm.blocks import BlockManager, BlockStats, kv_bytes_per_token

SYSTEM = [11, 12, 13, 14, 15, 16, 17, 18]  # a system prompt of two full blocks of 4


def _computed(bm: BlockManager, seq_id: int, tokens: list[int]) -> int:
    # Admit a sequence and pretend the engine wrote the KV of its whole prompt.
    cached = bm.allocate(seq_id, tokens)
    bm.mark_computed(seq_id, tokens, len(tokens))
    return cached


def test_kv_bytes_per_token_of_known_models():
    # Llama-2-7B, fp16: 32 layers x 32 KV heads x 128 dims -> half a MiB per token.
    assert kv_bytes_per_token(32, 32, 128, 2) == 524_288 == 2**19
    # Llama-3-8B shares each KV head between 4 query heads (GQA): a quarter of that.
    assert kv_bytes_per_token(32, 8, 128, 2) == 131_072


@pytest.mark.parametrize(("num_blocks", "block_size"), [(0, 16), (4, 0), (-1, -1)])
def test_sizes_below_one_are_refused(num_blocks, block_size):
    with pytest.raises(MaaslabError, match="at least 1"):
        BlockManager(num_blocks, block_size)


def test_table_grows_one_block_per_block_size_tokens_and_slots_never_collide():
    bm = BlockManager(6, 4)
    assert [bm.blocks_needed(n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    assert bm.allocate(1, [1, 2, 3, 4, 5]) == 0
    assert len(bm.table(1)) == 2 and bm.num_free == 4
    bm.append(1, 8)  # fills the second block: no new block
    assert len(bm.table(1)) == 2
    bm.append(1, 9)
    assert len(bm.table(1)) == 3 and bm.num_free == 3
    bm.append(1, 3)  # never shrinks
    assert len(bm.table(1)) == 3
    bm.allocate(2, [7] * 10)
    slots = set()
    for seq_id, length in [(1, 9), (2, 10)]:
        table = bm.table(seq_id)
        for p in range(length):  # token p lives at this slot of the cache tensors
            slots.add(table[p // 4] * 4 + p % 4)
    assert len(slots) == 19 and max(slots) < 6 * 4
    assert bm.num_free == 0 and not bm.can_append(1, 13) and bm.can_append(1, 12)
    with pytest.raises(MaaslabError, match="preempt"):
        bm.append(1, 13)
    assert len(bm.table(1)) == 3  # a refused append changes nothing
    bm.check()


def test_a_shared_system_prompt_is_computed_once():
    bm = BlockManager(10, 4)
    a, b = [*SYSTEM, 1, 2, 3], [*SYSTEM, 4, 5]
    assert bm.allocate(1, a) == 0
    # Not computed yet: nothing to share, the second request gets its own blocks.
    assert bm.allocate(99, a) == 0
    bm.free(99)
    bm.mark_computed(1, a, len(a))
    assert bm.allocate(2, b) == 2 * 4
    assert bm.table(1)[:2] == bm.table(2)[:2]
    assert bm.table(1)[2] != bm.table(2)[2]
    assert bm.shared_blocks() == set(bm.table(1)[:2])
    owners = bm.owners()
    assert all(owners[blk] == [1, 2] for blk in bm.table(1)[:2])
    assert owners[bm.table(2)[2]] == [2]
    stats = bm.stats()  # 2 blocks looked up per prompt: 1 and 99 missed, 2 hit
    assert (stats.prefix_queries, stats.prefix_hits) == (6, 2)
    assert stats.hit_rate == pytest.approx(2 / 6)
    assert stats.used == 4 and stats.used + stats.free == stats.num_blocks  # 99 never computed
    bm.check()
    bm.free(1)  # the shared blocks stay with seq 2
    assert bm.shared_blocks() == set()
    assert all(bm.owners()[blk] == [2] for blk in bm.table(2)[:2])
    bm.check()


def test_at_least_one_prompt_token_is_always_computed():
    bm = BlockManager(10, 4)
    _computed(bm, 1, SYSTEM)
    assert bm.allocate(2, SYSTEM) == 4  # exactly 2 full blocks: only the first may hit
    assert bm.allocate(3, [*SYSTEM, 9]) == 8  # one more token: both may
    assert bm.allocate(4, SYSTEM[:4]) == 0  # one block: nothing may hit
    bm.check()


def test_a_block_hash_covers_its_whole_prefix():
    bm = BlockManager(10, 4)
    _computed(bm, 1, [5, 6, 7, 8, 1, 2, 3, 4, 0])
    # The same four tokens after a different start hold different KV: no hit.
    assert bm.allocate(2, [1, 2, 3, 4, 0]) == 0
    assert bm.allocate(3, [9, 9, 9, 9, 1, 2, 3, 4, 0]) == 0
    assert bm.allocate(4, [5, 6, 7, 8, 1, 2, 3, 4, 5]) == 8
    bm.check()


def test_decoded_tokens_fill_blocks_that_later_prompts_reuse():
    bm = BlockManager(10, 4)
    tokens = [*SYSTEM[:6]]
    bm.allocate(1, tokens)
    bm.mark_computed(1, tokens, 6)
    for token in (30, 31, 32):  # decode: one token at a time
        tokens.append(token)
        bm.append(1, len(tokens))
        bm.mark_computed(1, tokens, len(tokens))
    # A follow-up turn whose prompt repeats the whole conversation hits both full blocks.
    assert bm.allocate(2, [*tokens, 40]) == 8
    bm.check()


def test_only_one_copy_of_a_prefix_computed_twice_is_registered():
    bm = BlockManager(10, 4)
    bm.allocate(1, SYSTEM)
    bm.allocate(2, SYSTEM)  # admitted in the same step, before either was computed
    bm.mark_computed(1, SYSTEM, 8)
    bm.mark_computed(2, SYSTEM, 8)
    assert bm.shared_blocks() == set()
    assert bm.allocate(3, [*SYSTEM, 1]) == 8
    assert bm.table(3)[:2] == bm.table(1)[:2]  # the first to register stays the cached copy
    bm.free(1)
    bm.free(2)
    bm.free(3)
    assert bm.stats().cached_free == 2  # seq 2's private copies went back as plain blocks
    bm.check()


def test_cached_blocks_survive_free_and_come_back_for_an_equal_prefix():
    bm = BlockManager(3, 4)
    _computed(bm, 1, [*SYSTEM, 1])
    first = bm.table(1)
    bm.free(1)
    stats = bm.stats()
    assert (stats.used, stats.free, stats.cached_free) == (0, 3, 2)
    # Taking a cached free block still takes it out of the free list: 3 blocks fit, 4 do not.
    assert bm.can_allocate([*SYSTEM, 2])
    assert not bm.can_allocate([*SYSTEM, 2, 3, 4, 5, 6])
    assert bm.allocate(2, [*SYSTEM, 2]) == 8
    assert bm.table(2)[:2] == first[:2]
    assert bm.stats().cached_free == 0
    bm.check()


def test_hits_on_blocks_in_use_need_no_free_block():
    bm = BlockManager(4, 4)
    _computed(bm, 1, [*SYSTEM, 1])  # 3 blocks, 1 left free
    longer = [*SYSTEM, 2, 3, 4, 5]  # 3 blocks, 2 of them shared with sequence 1
    assert bm.can_allocate(longer)
    assert bm.allocate(2, longer) == 8 and bm.num_free == 0
    bm.check()


def test_cached_free_blocks_are_evicted_least_recently_freed_first():
    bm = BlockManager(4, 2)
    _computed(bm, 1, [1, 1, 0])  # blocks 0 (cached [1, 1]) and 1 (partial)
    _computed(bm, 2, [2, 2, 0])  # blocks 2 (cached [2, 2]) and 3 (partial)
    bm.free(1)  # tail first: free list 1, 0
    bm.free(2)  # then 3, 2
    assert bm.stats().cached_free == 2
    bm.allocate(3, [9])  # takes block 1, which holds no prefix
    assert bm.table(3) == [1] and bm.stats().cached_free == 2
    bm.append(3, 3)  # takes block 0: sequence 1's prefix, freed first, is evicted
    assert bm.table(3) == [1, 0] and bm.stats().cached_free == 1
    assert bm.allocate(4, [2, 2, 5]) == 2  # sequence 2's prefix is still there
    assert bm.table(4) == [2, 3]
    bm.free(4)
    assert bm.allocate(5, [1, 1, 5]) == 0  # sequence 1's hash went with its block
    bm.check()


def test_a_prefix_is_evicted_tail_first():
    bm = BlockManager(4, 2)
    _computed(bm, 1, [1, 2, 3, 4, 5])  # blocks 0, 1 registered; 2 partial; 3 never used
    bm.free(1)  # free list: 3, 2, 1, 0
    bm.allocate(2, [9, 9, 9, 9, 9])  # takes 3, 2 and evicts 1, the prefix's tail
    assert bm.table(2) == [3, 2, 1]
    bm.free(2)
    assert bm.allocate(3, [1, 2, 3, 4, 5]) == 2  # the head survived
    bm.check()


def test_without_prefix_caching_nothing_is_shared():
    bm = BlockManager(10, 4, prefix_caching=False)
    assert _computed(bm, 1, [*SYSTEM, 1]) == 0
    assert _computed(bm, 2, [*SYSTEM, 1]) == 0
    assert bm.shared_blocks() == set()
    bm.free(1)
    assert _computed(bm, 3, [*SYSTEM, 1]) == 0
    assert bm.stats() == BlockStats(10, 6, 4, 0, 0, 0)
    assert bm.stats().hit_rate == 0.0
    bm.check()


def test_misuse_is_refused_and_changes_nothing():
    bm = BlockManager(2, 4)
    bm.allocate(1, [1, 2])
    with pytest.raises(MaaslabError, match="already has blocks"):
        bm.allocate(1, [1, 2])
    with pytest.raises(MaaslabError, match="empty prompt"):
        bm.allocate(2, [])
    with pytest.raises(MaaslabError, match="can_allocate"):
        bm.allocate(2, list(range(9)))
    with pytest.raises(MaaslabError, match="allocate it first"):
        bm.append(7, 4)
    with pytest.raises(MaaslabError, match="num_computed"):
        bm.mark_computed(1, [1, 2], 3)
    assert bm.table(1) == [0] and bm.num_free == 1
    bm.free(1)
    bm.free(1)  # an abort after finish
    bm.free(42)
    assert bm.num_free == 2
    bm.check()


# --- a random workload under a tiny budget -------------------------------------------------------

BS = 2
PREFIXES = [(), (1, 2), (1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 1, 2), (3, 3, 3)]


class BlockMachine(RuleBasedStateMachine):
    """Admit, prefill, decode, finish, abort and preempt at random; check after every step.

    `content` plays the cache's memory: for each physical block, the tokens (from position 0)
    whose KV was last written into it. A prefix hit must land on blocks holding exactly the
    prompt's tokens, and KV may only be written into a block no other sequence holds.
    """

    prefix_caching = True

    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(8, BS, prefix_caching=self.prefix_caching)
        self.tokens: dict[int, list[int]] = {}  # running sequences
        self.computed: dict[int, int] = {}
        self.waiting: list[tuple[int, list[int]]] = []  # preempted: old id, tokens to recompute
        self.content: dict[int, tuple[int, ...]] = {}
        self.next_id = 0

    def _admit(self, tokens: list[int]) -> bool:
        seq_id, self.next_id = self.next_id, self.next_id + 1
        if not self.bm.can_allocate(tokens):
            with pytest.raises(MaaslabError):
                self.bm.allocate(seq_id, tokens)
            return False
        cached = self.bm.allocate(seq_id, tokens)
        assert cached % BS == 0 and 0 <= cached < len(tokens)
        assert cached == 0 or self.prefix_caching
        table = self.bm.table(seq_id)
        for i in range(cached // BS):
            assert self.content[table[i]] == tuple(tokens[: (i + 1) * BS]), "a wrong prefix hit"
        self.tokens[seq_id], self.computed[seq_id] = list(tokens), cached
        return True

    def _pending(self) -> list[int]:
        return sorted(s for s in self.tokens if self.computed[s] < len(self.tokens[s]))

    def _done(self) -> list[int]:
        return sorted(s for s in self.tokens if self.computed[s] == len(self.tokens[s]))

    @rule(prefix=st.sampled_from(PREFIXES), suffix=st.lists(st.integers(0, 3), max_size=4))
    def admit(self, prefix, suffix):
        self._admit([*prefix, *suffix] or [0])

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def readmit(self, data):
        i = data.draw(st.integers(0, len(self.waiting) - 1))
        if self._admit(self.waiting[i][1]):
            self.waiting.pop(i)

    @precondition(lambda self: self._pending())
    @rule(data=st.data())
    def compute(self, data):  # a prefill chunk or a decode step: write KV, then report it
        seq_id = data.draw(st.sampled_from(self._pending()))
        tokens, start = self.tokens[seq_id], self.computed[seq_id]
        stop = data.draw(st.integers(start + 1, len(tokens)))
        table, owners = self.bm.table(seq_id), self.bm.owners()
        for i in range(start // BS, (stop - 1) // BS + 1):
            block = table[i]
            assert owners[block] == [seq_id], "KV written into a block another sequence holds"
            if i * BS < start:  # the block's earlier slots must still hold this sequence's KV
                assert self.content[block] == tuple(tokens[:start])
            self.content[block] = tuple(tokens[: min(stop, (i + 1) * BS)])
        self.bm.mark_computed(seq_id, tokens, stop)
        self.computed[seq_id] = stop

    @precondition(lambda self: self._done())
    @rule(data=st.data(), token=st.integers(0, 3))
    def decode(self, data, token):  # the sampled token needs a slot before its KV is written
        seq_id = data.draw(st.sampled_from(self._done()))
        tokens = self.tokens[seq_id]
        if self.bm.can_append(seq_id, len(tokens) + 1):
            self.bm.append(seq_id, len(tokens) + 1)
            tokens.append(token)
        else:
            with pytest.raises(MaaslabError):
                self.bm.append(seq_id, len(tokens) + 1)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def finish(self, data):
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)))
        self.bm.free(seq_id)
        del self.tokens[seq_id], self.computed[seq_id]

    @precondition(lambda self: self.tokens or self.waiting)
    @rule(data=st.data())
    def abort(self, data):  # a running sequence, or a preempted one whose blocks are gone
        ids = sorted(self.tokens) + [old for old, _ in self.waiting]
        seq_id = data.draw(st.sampled_from(ids))
        self.bm.free(seq_id)
        self.bm.free(seq_id)  # a second abort is a no-op
        self.tokens.pop(seq_id, None)
        self.computed.pop(seq_id, None)
        self.waiting = [(old, t) for old, t in self.waiting if old != seq_id]

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def preempt(self, data):  # free now, recompute prompt + output when re-admitted
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)))
        self.bm.free(seq_id)
        self.waiting.append((seq_id, self.tokens.pop(seq_id)))
        del self.computed[seq_id]

    @invariant()
    def consistent(self):
        self.bm.check()
        owners = self.bm.owners()
        assert self.bm.stats().used == len(owners)  # a block no table holds is free: no leak
        assert sorted({s for ids in owners.values() for s in ids}) == sorted(self.tokens)
        for seq_id, tokens in self.tokens.items():
            assert len(self.bm.table(seq_id)) == self.bm.blocks_needed(len(tokens))
        for block, ids in owners.items():
            if len(ids) > 1:  # shared: same position, same computed prefix in every holder
                assert self.prefix_caching
                positions = {self.bm.table(s).index(block) for s in ids}
                assert len(positions) == 1
                end = (positions.pop() + 1) * BS
                assert len({tuple(self.tokens[s][:end]) for s in ids}) == 1
                assert all(self.computed[s] >= end for s in ids)


class NoPrefixCachingMachine(BlockMachine):
    prefix_caching = False


FUZZ = settings(
    max_examples=50, stateful_step_count=40, deadline=None, database=None, derandomize=True
)
BlockMachine.TestCase.settings = FUZZ
NoPrefixCachingMachine.TestCase.settings = FUZZ
TestBlockManagerFuzz = BlockMachine.TestCase
TestBlockManagerFuzzWithoutPrefixCaching = NoPrefixCachingMachine.TestCase
