"""normbook.ch10_norms_in_transformers: attention logits, LayerNorm's curves
and the norm timings of chapter 10."""

import torch

from normbook.ch10_norms_in_transformers import (
    attention_logits,
    layer_norm_curves,
    time_forward_backward,
)
from normbook.common.transformer import SelfAttention, TinyTransformer
from normlib.nn import LayerNorm, RMSNorm

SHAPE = dict(d_model=16, n_heads=2, n_layers=2)


def test_layer_norm_curves_and_timing():
    model = TinyTransformer(10, causal=True, **SHAPE)
    pairs = layer_norm_curves(model, torch.randint(0, 10, (2, 6)))
    assert len(pairs) == 5           # 2 per block and the final one
    x_hat = torch.tensor(pairs[0][1], dtype=torch.float64)
    assert x_hat.shape == (10, 16)
    torch.testing.assert_close(x_hat.mean(-1),
                               torch.zeros(10, dtype=torch.float64),
                               atol=1e-9, rtol=0)
    times = time_forward_backward({"a": LayerNorm(8), "b": RMSNorm(8)},
                                  (4, 8), repeats=3)
    assert set(times) == {"a", "b"} and all(t > 0 for t in times.values())


def test_attention_logits_reads_every_block_and_cleans_up():
    torch.manual_seed(0)
    model = TinyTransformer(10, causal=True, **SHAPE)
    stats = attention_logits(model, torch.randint(0, 10, (2, 5)))
    assert len(stats) == 2 and all(s > 0 for s, _ in stats)
    assert all(m.record is None for m in model.modules()
               if isinstance(m, SelfAttention))
