"""normbook.common.transformer: its settings, attention (fused and spelled
out, QK-norm, recording), norm placement, padding and causality."""
import math

import pytest
import torch

from normbook.common.models import NORMS, IgnoreMask
from normbook.common.train import set_seed
from normbook.common.transformer import (
    PLACEMENTS,
    SelfAttention,
    TinyTransformer,
    TransformerConfig,
)
from normlib import nn as ours
from normlib.nn import LayerNorm, RMSNorm

SHAPE = dict(d_model=16, n_heads=2, n_layers=2)


def test_fused_and_spelled_out_attention_agree():
    torch.manual_seed(0)
    attention = SelfAttention(16, 2, causal=True)
    x, pad = torch.randn(3, 5, 16), torch.tensor(
        [[False] * 5, [False] * 3 + [True] * 2, [False] * 5])
    for mask in (None, pad):
        fused = attention(x, mask)
        attention.fused = False
        torch.testing.assert_close(attention(x, mask), fused)
        attention.fused = True


@pytest.mark.parametrize("norm", ("ln", "rms", "gn", "none"))
def test_padding_does_not_change_non_bn_outputs(norm):
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=2, max_len=10,
                            norm=norm, num_classes=3).eval()
    short = torch.randint(1, 12, (2, 6))
    padded = torch.cat([short, torch.zeros(2, 4, dtype=torch.long)], 1)
    pad_mask = torch.arange(10) >= 6
    torch.testing.assert_close(model(padded, pad_mask.expand(2, 10)),
                               model(short))
    lm = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10,
                         norm=norm).eval()
    torch.testing.assert_close(lm(padded, pad_mask.expand(2, 10))[:, :6],
                               lm(short))


def test_bn_transformer_leaves_pads_out_of_its_statistics():
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10,
                            norm="bn", num_classes=3)
    short = torch.randint(1, 12, (2, 6))
    # pads hold garbage tokens on purpose
    padded = torch.cat([short, torch.randint(1, 12, (2, 4))], 1)
    pad_mask = (torch.arange(10) >= 6).expand(2, 10)
    torch.testing.assert_close(model(padded, pad_mask), model(short))


def _padded_batch():
    """Three sequences of lengths 3, 5, 6 padded to 10 with garbage tokens
    -> (tokens (3, 10), pad_mask (3, 10))."""
    tokens = torch.randint(1, 12, (3, 10))
    return tokens, torch.arange(10) >= torch.tensor([[3], [5], [6]])


def test_bn_mask_false_is_bn_that_ignores_the_mask():
    tokens, pad_mask = _padded_batch()
    options = dict(d_model=16, n_heads=2, n_layers=2, max_len=10, norm="bn",
                   num_classes=3)
    set_seed(0)
    unmasked = TinyTransformer(12, bn_mask=False, **options)
    set_seed(0)
    # the same weights, its BN layers wrapped by hand
    wrapped = TinyTransformer(12, **options)
    for module in list(wrapped.modules()):
        for name, child in module.named_children():
            if isinstance(child, ours.SequenceBatchNorm):
                setattr(module, name, IgnoreMask(child))
    assert sum(isinstance(m, ours.SequenceBatchNorm)
               for m in unmasked.modules()) == 5
    assert torch.equal(unmasked(tokens, pad_mask), wrapped(tokens, pad_mask))
    set_seed(0)
    masked = TinyTransformer(12, **options)
    assert not torch.allclose(unmasked(tokens, pad_mask),
                              masked(tokens, pad_mask))   # pads moved stats
    # bn_mask changes nothing for the other norms
    for name in ("ln", "rms", "gn", "none"):
        set_seed(0)
        a = TinyTransformer(12, **{**options, "norm": name, "bn_mask": False})
        set_seed(0)
        out = a(tokens, pad_mask)
        b = TinyTransformer(12, **{**options, "norm": name})
        assert torch.equal(out, b(tokens, pad_mask))


@pytest.mark.parametrize("norm", NORMS)
def test_trim_padding_keeps_logits_where_pads_are_masked(norm):
    tokens, pad_mask = _padded_batch()
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=2, max_len=10,
                            norm=norm, num_classes=3)
    full = model(tokens, pad_mask)
    model.trim_padding = True
    # masked BN too: pads are out of its stats
    torch.testing.assert_close(model(tokens, pad_mask), full)


def test_trim_padding_changes_unmasked_bn_and_cuts_lm_logits():
    tokens, pad_mask = _padded_batch()
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10,
                            norm="bn", bn_mask=False, num_classes=3,
                            trim_padding=True)
    trimmed = model(tokens, pad_mask)
    # the longest sequence has 6 tokens
    torch.testing.assert_close(trimmed,
                               model(tokens[:, :6], pad_mask[:, :6]))
    model.trim_padding = False
    # 4 more pad columns enter BN's statistics
    assert not torch.allclose(trimmed, model(tokens, pad_mask))
    lm = TinyTransformer(12, d_model=16, n_heads=2, n_layers=1, max_len=10,
                         trim_padding=True)
    assert lm(tokens, pad_mask).shape == (3, 6, 12)


@pytest.mark.parametrize("norm", ("ln", "rms", "none"))
def test_causal_lm_does_not_see_the_future(norm):
    set_seed(0)
    model = TinyTransformer(12, d_model=16, n_heads=2, n_layers=2, max_len=8,
                            norm=norm, causal=True)
    tokens = torch.randint(0, 12, (3, 8))
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 12
    out, out_changed = model(tokens), model(changed)
    torch.testing.assert_close(out[:, :5], out_changed[:, :5])
    assert not torch.allclose(out[:, 5:], out_changed[:, 5:])


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_transformer_shapes(placement):
    model = TinyTransformer(20, d_model=16, n_heads=4, n_layers=1, max_len=12,
                            placement=placement)
    assert model(torch.randint(0, 20, (3, 12))).shape == (3, 12, 20)
    assert (model.norm_f is None) == (placement == "post")


@pytest.mark.parametrize("qk_norm", ["ln", "rms"])
def test_qk_norm_normalizes_q_and_k_and_fused_equals_spelled_out(qk_norm):
    torch.manual_seed(0)
    attention = SelfAttention(16, 2, causal=True, qk_norm=qk_norm)
    kind = {"ln": LayerNorm, "rms": RMSNorm}[qk_norm]
    assert (isinstance(attention.q_norm.norm, kind)
            and attention.q_norm.norm.normalized_shape == (8,))
    x, pad = torch.randn(3, 5, 16), torch.tensor(
        [[False] * 5, [False] * 3 + [True] * 2, [False] * 5])
    for mask in (None, pad):
        fused = attention(x, mask)
        assert fused.shape == (3, 5, 16)
        attention.fused = False
        torch.testing.assert_close(attention(x, mask), fused)
        attention.fused = True
    with pytest.raises(ValueError, match="qk_norm"):
        SelfAttention(16, 2, qk_norm="bn")


def test_qk_norm_bounds_the_logits():
    torch.manual_seed(0)
    attention = SelfAttention(16, 2, qk_norm="rms")
    with torch.no_grad():
        attention.qkv.weight.mul_(100.0)               # huge queries and keys
    attention.record = []
    attention(torch.randn(2, 6, 16))
    max_logit, entropy = attention.record[0]
    # |q.k| / sqrt(D) <= ||q|| ||k|| / sqrt(D) = sqrt(D)
    assert max_logit <= math.sqrt(8) * (1 + 1e-5)
    assert 0 <= entropy <= math.log(6)


def test_recording_leaves_the_output_and_cleans_up():
    torch.manual_seed(0)
    attention, x = SelfAttention(16, 2, causal=True), torch.randn(2, 4, 16)
    attention.record = []
    out = attention(x)
    attention.record, plain = None, attention(x)
    torch.testing.assert_close(out, plain)


def test_recorded_values():
    torch.manual_seed(0)
    attention, x = SelfAttention(16, 2, causal=True), torch.randn(2, 4, 16)
    attention.record = []
    attention(x)
    q, k, _ = attention.qkv(x).view(2, 4, 3, 2, 8).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(
        ~torch.ones(4, 4, dtype=torch.bool).tril(), -math.inf)
    weights = scores.softmax(-1)
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1).mean()
    assert attention.record[0][0] == pytest.approx(scores.max().item(),
                                                   rel=1e-6)
    assert attention.record[0][1] == pytest.approx(entropy.item(), rel=1e-5)


def test_settings_are_a_documented_dataclass_and_bad_ones_are_refused():
    model = TinyTransformer(20, placement="post", **SHAPE)
    assert model.config == TransformerConfig(20, placement="post", **SHAPE)
    assert model.norm_f is None                # Post-LN ends with its norm
    for bad in (dict(placement="middle"), dict(norm="batch"),
                dict(init="xavier"), dict(qk_norm="bn"),
                dict(d_model=10, n_heads=4)):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            TinyTransformer(20, **bad)
    with pytest.raises(TypeError, match="pre_ln"):   # placement replaced it
        TinyTransformer(20, pre_ln=True)


def test_peri_normalizes_each_branch_output():
    torch.manual_seed(0)
    model = TinyTransformer(20, causal=True, placement="peri", **SHAPE)
    block, x = model.blocks[0], torch.randn(2, 8, 16)
    update = block(x) - x      # two normalized branch outputs, summed
    assert model.norm_f is not None and hasattr(block, "norm2_out")
    # each branch adds rms 1 (unit weights): |a + b|^2 <= 4 C
    assert update.pow(2).mean(-1).max() < 4 + 1e-4
