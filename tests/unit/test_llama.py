"""mini-llama: LlamaSpec checks and sizes, MiniLlama as LlamaForCausalLM itself (an oracle), the
recipe's folder loading with plain transformers, and the shipped model beating a unigram model."""

import json
import math
import platform
import re

import pytest
import torch

from maaslab.assets import LLAMA_NOTES, RECIPES, save_llama
from maaslab.errors import MaaslabError
from maaslab.models.llama import LlamaSpec, MiniLlama
from maaslab.paths import MODELS_DIR
from maaslab.subwords import TURN_END, corpus_digest, load_documents, train_tokenizer
from maaslab.textdata import load_corpus
from maaslab.train import evaluate

SHIPPED = MODELS_DIR / "mini-llama"
HF_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    LLAMA_NOTES,
)
TINY = LlamaSpec(
    vocab_size=300, context=32, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=48
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models: a second thread only adds contention on a busy 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden": 0}, "positive"),
        ({"hidden": 30}, "divide by heads"),
        ({"kv_heads": 3}, "heads by"),
        ({"hidden": 24, "heads": 8}, "even"),  # head size 3
        ({"rope_theta": 0.5}, "rope_theta"),
        ({"vocab_size": 2}, "vocabulary"),  # <|end_of_text|> is id 2
    ],
)
def test_spec_refuses_shapes_that_cannot_be_built(changes, message):
    with pytest.raises(MaaslabError, match=message):
        LlamaSpec(**changes)


@pytest.mark.parametrize(
    "spec", [TINY, LlamaSpec(vocab_size=512, hidden=48, layers=3, heads=6, kv_heads=3)]
)
def test_parameters_counts_the_real_model(spec):
    model = MiniLlama(spec)
    assert spec.parameters() == sum(p.numel() for p in model.parameters())


def test_spec_becomes_a_llama_config_with_grouped_query_attention():
    config = TINY.to_hf()
    assert (config.hidden_size, config.num_hidden_layers, config.max_position_embeddings) == (
        32,
        2,
        32,
    )
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert config.tie_word_embeddings and config.hidden_act == "silu"
    attention = MiniLlama(TINY).llama.model.layers[0].self_attn
    assert attention.k_proj.out_features == 2 * 8  # two key heads of size 8 serve four queries


def test_logits_are_llama_for_causal_lm_s_own():
    """Oracle: the same weights in a LlamaForCausalLM built by transformers give the same logits,
    and the training loop's loss equals the loss transformers computes from labels."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    ours = MiniLlama(TINY).eval()
    theirs = LlamaForCausalLM(TINY.to_hf()).eval()
    theirs.load_state_dict(ours.llama.state_dict())
    span = torch.randint(0, TINY.vocab_size, (3, TINY.context + 1))
    x, y = span[:, :-1], span[:, 1:]
    with torch.no_grad():
        logits = ours(x)
        assert logits.shape == (3, TINY.context, TINY.vocab_size)
        torch.testing.assert_close(logits, theirs(input_ids=x).logits, rtol=0, atol=0)
        hf_loss = theirs(input_ids=x, labels=x).loss.item()  # shifts inside: predicts x[1:]
    loss, _ = evaluate(ours, [(x[:, :-1], y[:, :-1])], "language_model")
    assert loss == pytest.approx(hf_loss, rel=1e-5)


def test_more_tokens_than_the_context_are_refused():
    with pytest.raises(MaaslabError, match="context of 32"):
        MiniLlama(TINY)(torch.zeros(1, 33, dtype=torch.long))


def test_save_refuses_a_tokenizer_of_another_vocabulary(tmp_path):
    tokenizer = train_tokenizer(["a few words of text, then a few more"], 280)
    with pytest.raises(MaaslabError, match="does not match"):
        save_llama(MiniLlama(TINY), tokenizer, tmp_path / "m", {}, overwrite=False)
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def fast_folder(tmp_path_factory):
    # conftest turns fast mode on: a tiny model on a few documents, in seconds
    return RECIPES["mini-llama"].build(tmp_path_factory.mktemp("models"))


def test_fast_recipe_writes_a_folder_plain_transformers_loads(fast_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert fast_folder.name == "mini-llama"
    assert {p.name for p in fast_folder.iterdir()} >= set(HF_FILES)
    assert [p.name for p in fast_folder.parent.iterdir()] == ["mini-llama"]  # no staging left
    notes = json.loads((fast_folder / LLAMA_NOTES).read_text())
    assert notes["corpus"]["fast_mode"] and notes["training_seconds"] < 60
    model = AutoModelForCausalLM.from_pretrained(fast_folder)
    tokenizer = AutoTokenizer.from_pretrained(fast_folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.num_parameters() == notes["parameters"]
    prompt = tokenizer("The for statement", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 5) or out[0, -1] in (2, 3)
    assert math.isfinite(notes["heldout_perplexity"]) and notes["unigram_perplexity"] > 1


def test_rebuilding_over_a_folder_replaces_it(fast_folder):
    before = json.loads((fast_folder / LLAMA_NOTES).read_text())
    RECIPES["mini-llama"].build(fast_folder.parent)  # overwrite=True, atomically
    after = json.loads((fast_folder / LLAMA_NOTES).read_text())
    assert after["heldout_perplexity"] == before["heldout_perplexity"]  # seeded
    assert [p.name for p in fast_folder.parent.iterdir()] == ["mini-llama"]


def test_a_draft_shares_its_targets_tokenizer_and_the_engine_takes_it(tmp_path):
    from transformers import AutoTokenizer

    from maaslab.llm.engine import EngineConfig, LLMEngine
    from maaslab.llm.model import PagedModel
    from maaslab.llm.sequence import SamplingParams

    with pytest.raises(MaaslabError, match="build that first"):
        RECIPES["mini-llama-draft"].build(tmp_path)
    target = RECIPES["mini-llama"].build(tmp_path)
    draft = RECIPES["mini-llama-draft"].build(tmp_path)
    a, b = AutoTokenizer.from_pretrained(target), AutoTokenizer.from_pretrained(draft)
    assert a.get_vocab() == b.get_vocab()
    notes = json.loads((draft / LLAMA_NOTES).read_text())
    assert notes["tokenizer"]["shared_with"] == "mini-llama"
    engine = LLMEngine(
        PagedModel.from_folder(target),
        EngineConfig(speculative_tokens=2),
        draft=PagedModel.from_folder(draft),
    )
    greedy = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    plain = LLMEngine(PagedModel.from_folder(target)).generate([[1, 40, 41]], greedy)
    assert engine.generate([[1, 40, 41]], greedy) == plain


# --- the shipped model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not SHIPPED.is_dir():
        pytest.fail(f"{SHIPPED} is missing: run `python -m maaslab assets mini-llama`")
    return AutoModelForCausalLM.from_pretrained(SHIPPED), AutoTokenizer.from_pretrained(SHIPPED)


@pytest.fixture(scope="module")
def notes():
    return json.loads((SHIPPED / LLAMA_NOTES).read_text())


def test_shipped_folder_is_a_plain_hugging_face_folder(shipped, notes):
    model, tokenizer = shipped
    assert {p.name for p in SHIPPED.iterdir()} >= set(HF_FILES)
    assert (SHIPPED / "model.safetensors").stat().st_size < 25e6
    assert model.config.model_type == "llama" and model.config.max_position_embeddings >= 512
    assert model.num_parameters() == notes["parameters"] == LlamaSpec(**notes["spec"]).parameters()
    assert len(tokenizer) == model.config.vocab_size == notes["tokenizer"]["vocab_size"]
    assert not notes["corpus"]["fast_mode"]
    end = tokenizer.convert_tokens_to_ids(TURN_END)
    assert set(model.generation_config.eos_token_id) == {tokenizer.eos_token_id, end}


def test_shipped_model_beats_the_unigram_baseline(notes):
    assert notes["heldout_perplexity"] < notes["unigram_perplexity"] / 5
    assert len(notes["epochs"]) == notes["train_config"]["epochs"]  # every epoch recorded
    assert notes["corpus"]["tokens"]["heldout"] > 10 * 512  # measured on many windows


def test_shipped_model_was_trained_on_the_corpus_this_python_builds(notes):
    if notes["corpus"]["python"] != platform.python_version():
        pytest.skip(f"trained on Python {notes['corpus']['python']}; its stdlib differs")
    assert corpus_digest(load_documents()) == notes["corpus"]["digest"]


def test_shipped_model_continues_a_prompt_with_words_of_the_corpus(shipped):
    model, tokenizer = shipped
    prompt = tokenizer('The "while" statement is used for', return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    continuation = tokenizer.decode(
        out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True
    )
    words = re.findall(r"[A-Za-z]{3,}", continuation)
    known = set(re.findall(r"[A-Za-z]{3,}", load_corpus()))
    assert len(words) >= 5, continuation
    assert sum(w in known for w in words) / len(words) >= 0.8, continuation


def test_shipped_model_answers_a_chat_turn_and_ends_it(shipped):
    model, tokenizer = shipped
    chat = [{"role": "user", "content": "What does os.path.join do?"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=120, do_sample=False)
    answer = out[0, prompt["input_ids"].shape[1] :].tolist()
    assert tokenizer.convert_tokens_to_ids(TURN_END) in answer  # the turn ends by itself
    text = tokenizer.decode(answer, skip_special_tokens=True)
    assert re.search(r"path", text, re.IGNORECASE), text
