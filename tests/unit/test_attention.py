"""Attention from scratch against torch: SDPA, nn.MultiheadAttention, masks, block, checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from maaslab.errors import MaaslabError
from maaslab.exercises import attention as ac
from maaslab.models.attention import (
    AttentionConfig,
    MultiHeadAttention,
    SequenceClassifier,
    TransformerBlock,
    causal_mask,
    copy_to_torch_mha,
    max_token_dataset,
    scaled_dot_product_attention,
)


def _qkv(B=2, H=3, T=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, d, generator=g) for _ in range(3))


def _padding_mask(lengths, T):
    # (B, 1, 1, T): key s of sequence b is real when s < lengths[b].
    return (torch.arange(T) < torch.tensor(lengths)[:, None])[:, None, None, :]


def test_causal_mask_is_lower_triangular():
    m = causal_mask(4)
    assert m.dtype == torch.bool
    assert m.tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]


@pytest.mark.parametrize("masking", ["none", "causal", "padding"])
def test_sdpa_matches_torch(masking):
    q, k, v = _qkv()
    T = q.shape[-2]
    mask = {"none": None, "causal": causal_mask(T), "padding": _padding_mask([6, 3], T)}[masking]
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, T))  # rows are distributions
    if mask is not None:
        assert torch.all(weights.masked_select(~mask.expand_as(weights)) == 0)


def test_sdpa_weights_are_softmax_of_scaled_scores():
    q, k, v = _qkv(d=16)
    _, weights = scaled_dot_product_attention(q, k, v)
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(16), dim=-1)
    torch.testing.assert_close(weights, expected)
    assert not torch.allclose(weights, torch.softmax(q @ k.transpose(-2, -1), dim=-1))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_multi_head_attention_matches_torch(fused, bias):
    torch.manual_seed(0)
    ours = MultiHeadAttention(
        AttentionConfig(embed_dim=24, num_heads=3, fused_qkv=fused, bias=bias)
    )
    theirs = copy_to_torch_mha(ours)
    x = torch.randn(2, 7, 24)
    out, weights = ours(x)
    assert weights.shape == (2, 3, 7, 7)
    expected, avg = theirs(x, x, x, need_weights=True, average_attn_weights=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(weights.mean(dim=1), avg, rtol=0, atol=1e-5)
    # With a causal mask: ours keeps True, torch's attn_mask blocks True, hence the ~.
    mask = causal_mask(7)
    out, weights = ours(x, mask)
    expected, per_head = theirs(x, x, x, attn_mask=~mask, average_attn_weights=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(weights, per_head, rtol=0, atol=1e-5)


def test_causal_output_does_not_depend_on_later_inputs():
    torch.manual_seed(0)
    block = TransformerBlock(AttentionConfig(embed_dim=16, num_heads=2)).eval()
    x = torch.randn(1, 8, 16)
    changed = x.clone()
    changed[:, 5:] += torch.randn(1, 3, 16)  # perturb positions 5, 6, 7
    mask = causal_mask(8)
    before, _ = block(x, mask)
    after, _ = block(changed, mask)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])
    # Without the mask every position sees the change.
    assert not torch.allclose(block(x)[0][:, :5], block(changed)[0][:, :5])


def test_block_shapes_residual_and_gradient():
    torch.manual_seed(0)
    block = TransformerBlock(AttentionConfig(embed_dim=16, num_heads=4, dropout=0.1))
    x = torch.randn(3, 5, 16, requires_grad=True)
    y, weights = block(x)
    assert y.shape == (3, 5, 16) and weights.shape == (3, 4, 5, 5)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Zero the branches' output layers and the block is the identity: the residual path.
    with torch.no_grad():
        for layer in (block.attn.out_proj, block.mlp[2]):
            layer.weight.zero_()
            layer.bias.zero_()
    torch.testing.assert_close(block.eval()(x)[0], x)


def test_sequence_classifier_and_toy_task():
    data = max_token_dataset(n_samples=50, seq_len=6, vocab_size=7)
    assert data.X_train.shape == (35, 6) and data.X_test.shape == (10, 6)
    assert data.X_val.shape == (5, 6)  # 70 / 10 / 20 %
    assert (data.y_train == data.X_train.max(axis=1)).all()
    model = SequenceClassifier(AttentionConfig(16, 2), vocab_size=7, seq_len=6, n_classes=7)
    logits = model(torch.from_numpy(data.X_train[:4]))
    assert logits.shape == (4, 7)
    maps = model.attention_maps(torch.from_numpy(data.X_train[:4]))
    assert maps.shape == (1, 4, 2, 6, 6)
    torch.testing.assert_close(maps.sum(-1), torch.ones(1, 4, 2, 6))


def test_bad_inputs_say_what_to_do():
    with pytest.raises(MaaslabError, match="not divisible by num_heads 5"):
        AttentionConfig(embed_dim=32, num_heads=5)
    with pytest.raises(MaaslabError, match="dropout"):
        AttentionConfig(dropout=1.0)
    q, k, v = _qkv(T=6)
    with pytest.raises(MaaslabError, match=r"mask of shape \(5, 5\) does not fit"):
        scaled_dot_product_attention(q, k, v, causal_mask(5))
    mha = MultiHeadAttention(AttentionConfig(embed_dim=8, num_heads=2))
    with pytest.raises(MaaslabError, match=r"expected input \(batch, tokens, 8\)"):
        mha(torch.randn(2, 5, 6))
    with pytest.raises(MaaslabError, match="does not fit"):
        mha(torch.randn(2, 5, 8), causal_mask(4))


# ---- exercise checks: a right answer passes, each known mistake fails with its own message ----


def _weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda q, k: torch.softmax(q @ k.transpose(-2, -1), -1), "forgot to divide"),
        (lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], -1), "divided by d"),
        (lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -2), "over the keys"),
        (lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(8), "apply a softmax"),
        (lambda q, k: _weights(q, k)[..., :3], "shape"),
        (lambda q, k: _weights(q, k) + 0.01, "largest difference"),
        (lambda q, k: None, "forget `return`"),
        (lambda q, k: "weights", "expected a tensor"),
    ],
)
def test_check_attention_weights(answer, message):
    assert ac.check_attention_weights(_weights).passed
    result = ac.check_attention_weights(answer)
    assert not result.passed and message in result.message


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda T: torch.ones(T, T, dtype=torch.bool).triu(), "wrong triangle"),
        (lambda T: ~causal_mask(T), "inverted"),
        (lambda T: torch.ones(T, T).tril(-1), "diagonal is missing"),
        (lambda T: torch.ones(T, T), "nothing is masked"),
        (lambda T: torch.ones(T), "shape"),
    ],
)
def test_check_causal_mask(answer, message):
    assert ac.check_causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool).tril()).passed
    assert ac.check_causal_mask(lambda T: [[int(s <= t) for s in range(T)] for t in range(T)])
    result = ac.check_causal_mask(answer)
    assert not result.passed and message in result.message


def _attend(q, k, v, mask, *, scale=True, where="before", flip=False):
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    keep = ~mask if flip else mask
    if where == "before":
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if where == "after":
        weights = weights * keep
    return weights @ v, weights


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"where": "nowhere"}, "mask is ignored"),
        ({"where": "after"}, "after the softmax"),
        ({"flip": True}, "wrong positions"),
        ({"scale": False}, "forgot to divide"),
    ],
)
def test_check_attention_output(kwargs, message):
    assert ac.check_attention_output(_attend).passed  # (out, weights) is accepted
    assert ac.check_attention_output(lambda *a: _attend(*a)[0]).passed  # and out alone
    result = ac.check_attention_output(lambda *a: _attend(*a, **kwargs))
    assert not result.passed and message in result.message
    crashed = ac.check_attention_output(lambda q, k, v, mask: q @ k)
    assert not crashed.passed and "raised RuntimeError" in crashed.message
