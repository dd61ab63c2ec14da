"""Lesson 15's auto-checked exercises: the KV cache's size, a block allocator, one scheduler
step, and the tokens a speculative target pass yields.

Every check compares the learner's function with the engine's own code on the same input:
`maaslab.llm.blocks.kv_bytes_per_token`, `BlockManager.blocks_needed`, `KVPool.slots`, the
`Scheduler` itself (built in the state the exercise describes) and
`maaslab.llm.speculative.expected_tokens`. When an answer equals a known mistake (K without V,
query heads for KV heads, bits for bytes, floor for ceil, a prompt admitted ahead of its turn,
a^k for the geometric sum...) the message names it.

One module per exercise; import any name from this package:

- `kv_cache`: exercise 1, bytes per token and GiB for a batch of contexts;
- `block_allocator`: exercise 2, blocks needed and a token's cache slot;
- `step_state` and `scheduler_step`: exercise 3, a scheduler's state with the engine's decision
  in it, and the check of one step against it;
- `speculative`: exercise 4, tokens per target pass;
- `answers`: the learner's answers as numbers, which exercises 1, 2 and 4 share.
"""

from maaslab.exercises.serving_language_models.block_allocator import (
    BLOCK_PROBES,
    SLOT_PROBES,
    check_blocks_needed,
    check_slot,
)
from maaslab.exercises.serving_language_models.kv_cache import (
    CONTEXT_PROBES,
    GIB,
    KV_PROBES,
    check_kv_bytes_per_token,
    check_kv_cache_gib,
)
from maaslab.exercises.serving_language_models.scheduler_step import (
    STEP_MISTAKES,
    check_schedule_step,
    reference_step,
)
from maaslab.exercises.serving_language_models.speculative import (
    SPEC_PROBES,
    check_expected_tokens,
)
from maaslab.exercises.serving_language_models.step_state import (
    STEP_PROBES,
    Running,
    StepState,
    Waiting,
    engine_decision,
    random_states,
)

__all__ = [
    "BLOCK_PROBES",
    "CONTEXT_PROBES",
    "GIB",
    "KV_PROBES",
    "SLOT_PROBES",
    "SPEC_PROBES",
    "STEP_MISTAKES",
    "STEP_PROBES",
    "Running",
    "StepState",
    "Waiting",
    "check_blocks_needed",
    "check_expected_tokens",
    "check_kv_bytes_per_token",
    "check_kv_cache_gib",
    "check_schedule_step",
    "check_slot",
    "engine_decision",
    "random_states",
    "reference_step",
]
