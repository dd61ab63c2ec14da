"""MiniGPT: training lowers the next-character loss, an oracle against GPT-2's own loss,
save/load, and the hand-written sampler (temperature, top-k, top-p)."""

import math

import pytest
import torch
from torch import nn

from maaslab.data import make_loaders
from maaslab.errors import MaaslabError
from maaslab.models import build_model
from maaslab.models.gpt import GPTConfig, MiniGPT, generate, next_token_probs, tokens_per_second
from maaslab.registry import load_model, read_metadata, save_model
from maaslab.textdata import CharTokenizer, load_text_dataset
from maaslab.train import TrainConfig, evaluate, train

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 4, "context": 32}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are tiny: a second thread only adds contention on a busy 2-core machine
    # (one forward pass goes from ~0.5 ms to ~25 ms), as train() knows for small models too.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.from_dict(load_text_dataset(context=8, max_windows=1).meta["tokenizer"])


def _tiny(tok, **kwargs):
    torch.manual_seed(0)
    return MiniGPT(GPTConfig(vocab_size=tok.vocab_size, **{**TINY, **kwargs}))


def test_forward_shapes_and_loss_at_init_is_about_ln_v(tok):
    model = _tiny(tok).eval()
    data = load_text_dataset(context=32, max_windows=64)
    x, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    assert model(x).shape == (64, 32, tok.vocab_size)
    loss, acc = evaluate(model, [(x, y)], "language_model")
    assert abs(loss - math.log(tok.vocab_size)) < 0.3 and 0.0 <= acc < 0.3


def test_our_lm_loss_equals_gpt2s_own_labels_loss(tok):
    """Oracle: the loop's per-token loss equals GPT2LMHeadModel(labels=...), which shifts inside."""
    model = _tiny(tok).eval()
    data = load_text_dataset(context=16, max_windows=8)  # windows shorter than the model context
    x, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    ours, _ = evaluate(model, [(x, y)], "language_model")
    # HF predicts labels[t + 1] from position t, so give it the whole span x plus y's last id.
    span = torch.cat([x, y[:, -1:]], dim=1)  # (B, T + 1)
    with torch.no_grad():
        theirs = model.gpt(input_ids=span, labels=span).loss.item()
    assert ours == pytest.approx(theirs, rel=1e-5)
    # and a wrong shift (targets = inputs) gives a clearly different number
    wrong, _ = evaluate(model, [(x, x)], "language_model")
    assert abs(wrong - theirs) > 1e-3


def test_training_lowers_the_test_loss_well_below_ln_v(tok):
    data = load_text_dataset(context=32, stride=16, max_windows=1600)
    model = _tiny(tok, dropout=0.0)
    cfg = TrainConfig(epochs=6, batch_size=32, optimizer="adamw", lr=3e-3, grad_norm_samples=0)
    history = train(model, data, cfg)
    assert len(history.step_loss) == 300 and history.task == "language_model"
    first, last = history.epochs[0], history.last
    assert last.val_loss < math.log(tok.vocab_size) - 2.0  # ln 104 = 4.64; about 2.2 here
    assert last.val_loss < first.val_loss and last.val_accuracy > 0.3
    assert 0.0 < last.train_accuracy < 1.0


def test_the_loop_matches_a_bare_language_model_loop_exactly(tok):
    """Oracle for the loop's language-model path: flattened loss, per-token train accuracy."""
    data = load_text_dataset(context=16, max_windows=96)
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer="adamw", lr=3e-3, seed=5)
    ours = _tiny(tok)
    history = train(ours, data, cfg)

    bare = _tiny(tok)
    torch.manual_seed(5)
    loader, _ = make_loaders(data, 32, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.AdamW(bare.parameters(), lr=3e-3, weight_decay=0.0)  # as TrainConfig
    bare.train()
    for epoch in range(2):
        correct, tokens, losses = 0, 0, []
        for xb, yb in loader:
            logits = bare.gpt(input_ids=xb).logits  # (B, T, V)
            loss = nn.functional.cross_entropy(logits.reshape(-1, tok.vocab_size), yb.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += (logits.argmax(-1) == yb).sum().item()
            tokens += yb.numel()
            losses.append(loss.item())
        assert history.epochs[epoch].train_accuracy == pytest.approx(correct / tokens)
        assert history.step_loss[epoch * 3 : epoch * 3 + 3] == losses  # bit for bit
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), bare.parameters(), strict=True))


def test_save_load_round_trip_gives_identical_logits(tok, tmp_path):
    model = _tiny(tok).eval()
    folder = save_model(model, tmp_path / "gpt", metadata={"tokenizer": tok.to_dict()})
    loaded = load_model(folder)
    assert isinstance(loaded, MiniGPT) and loaded.config == model.config
    # the tied output layer is still the embedding table after loading
    assert loaded.gpt.lm_head.weight is loaded.gpt.transformer.wte.weight
    x = torch.tensor([tok.encode("def f(x):\n    return x")])
    assert torch.equal(model(x), loaded(x))
    assert CharTokenizer.from_dict(read_metadata(folder)["tokenizer"]) == tok
    assert isinstance(build_model("gpt", **TINY, vocab_size=tok.vocab_size), MiniGPT)


def test_config_checks_are_named():
    with pytest.raises(MaaslabError, match="multiple of n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(MaaslabError, match="dropout"):
        GPTConfig(dropout=1.0)


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]))
    assert torch.allclose(next_token_probs(logits), torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]))
    top2 = next_token_probs(logits, top_k=2)
    assert torch.allclose(top2, torch.tensor([0, 0.4, 0, 0.3, 0]) / 0.7)
    # smallest set with cumulative probability >= p: 0.4 + 0.3 = 0.7 >= 0.7, so two tokens
    assert torch.allclose(next_token_probs(logits, top_p=0.7), top2)
    # 0.71 needs a third token (0.4 + 0.3 + 0.15)
    p3 = next_token_probs(logits, top_p=0.71)
    assert torch.allclose(p3, torch.tensor([0, 0.4, 0, 0.3, 0.15]) / 0.85)
    assert torch.equal(next_token_probs(logits, top_p=0.1) > 0, torch.tensor([0, 1, 0, 0, 0]) > 0)
    # temperature sharpens (< 1) or flattens (> 1) without changing the order
    cold, hot = next_token_probs(logits, 0.5), next_token_probs(logits, 2.0)
    assert cold.max() > 0.4 > hot.max() and cold.argmax() == hot.argmax() == 1


def test_top_k_1_is_greedy_and_seeds_reproduce(tok):
    model = _tiny(tok).eval()
    prompt = "The if statement"
    sampled = "".join(generate(model, tok, prompt, 40, top_k=1, seed=3))
    ids = tok.encode(prompt)
    with torch.no_grad():  # greedy by hand: always the most likely next character
        for _ in range(40):
            ids.append(int(model(torch.tensor([ids[-32:]]))[0, -1].argmax()))
    assert sampled == tok.decode(ids[-40:])
    a = "".join(generate(model, tok, prompt, 30, temperature=1.5, seed=1))
    b = "".join(generate(model, tok, prompt, 30, temperature=1.5, seed=1))
    c = "".join(generate(model, tok, prompt, 30, temperature=1.5, seed=2))
    assert a == b != c and len(a) == 30


def test_generate_streams_and_crops_a_long_prompt(tok):
    model = _tiny(tok).eval()
    stream = generate(model, tok, "x" * 100 + "\u4e2d", 5, seed=0)  # longer than context 32
    pieces = list(stream)
    assert len(pieces) == 5 and all(len(p) == 1 for p in pieces)
    assert tokens_per_second(model, tok, max_new_tokens=5) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "  \n"}, "prompt is empty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 1001}, "max_new_tokens"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_bad_sampling_input_is_named_before_any_token(tok, kwargs, message):
    model = _tiny(tok)
    args = {"prompt": "The", "max_new_tokens": 5, **kwargs}
    with pytest.raises(MaaslabError, match=message):
        generate(model, tok, **args)


@pytest.mark.parametrize(
    "temperature, top_p", [(1e-38, None), (5e-324, None), (1.0, 1e-300), (1e-45, 5e-324)]
)
def test_extreme_sampling_settings_tend_to_the_likeliest_token(temperature, top_p):
    logits = torch.tensor([0.5, 3.0, -1.0, 2.9999])
    probs = next_token_probs(logits, temperature=temperature, top_p=top_p)
    assert torch.equal(probs, torch.tensor([0.0, 1.0, 0.0, 0.0]))


def test_a_tiny_temperature_shares_between_tied_tokens():
    probs = next_token_probs(torch.tensor([2.0, 1.0, 2.0]), temperature=1e-300)
    assert torch.allclose(probs, torch.tensor([0.5, 0.0, 0.5]))
