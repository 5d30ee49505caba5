"""Chapter 9's additions: DyT, QK-norm, norm placement, attention-logit recording, their ensembles."""
import math

import pytest
import torch

from normbook.common.ensemble import Ensemble
from normbook.common.charlm import causal_lm, char_lm_data
from normbook.common.models import SelfAttention, TinyTransformer, make_norm
from normbook.ch09_norms_in_transformers import attention_logits, layer_norm_curves, time_forward_backward
from normlib.nn import DyT, LayerNorm, RMSNorm

SHAPE = dict(d_model=16, n_heads=2, n_layers=2)


def test_dyt_matches_a_hand_written_reference():
    torch.manual_seed(0)
    dyt = DyT(8)
    with torch.no_grad():
        dyt.alpha.fill_(0.7), dyt.weight.uniform_(0.5, 1.5), dyt.bias.uniform_(-1, 1)
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    alpha, weight, bias = (p.detach().double().requires_grad_() for p in (dyt.alpha, dyt.weight, dyt.bias))
    reference = weight * torch.tanh(alpha * x) + bias
    out = dyt.double()(x)
    torch.testing.assert_close(out, reference)
    grads = torch.autograd.grad(out.sum(), (x, dyt.alpha, dyt.weight, dyt.bias))
    expected = torch.autograd.grad(reference.sum(), (x, alpha, weight, bias))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    assert DyT(4).alpha.item() == 0.5 and DyT(4).alpha.dim() == 0


def test_dyt_is_a_sequence_norm_that_ignores_the_mask():
    norm, x = make_norm("dyt", 8, "sequence"), torch.randn(2, 3, 8)
    torch.testing.assert_close(norm(x, torch.ones(2, 3, dtype=torch.bool)), norm(x))
    with pytest.raises(ValueError, match="kind"):
        make_norm("dyt", 8, "image")


@pytest.mark.parametrize("qk_norm", ["ln", "rms"])
def test_qk_norm_normalizes_q_and_k_and_fused_equals_spelled_out(qk_norm):
    torch.manual_seed(0)
    attention = SelfAttention(16, 2, causal=True, qk_norm=qk_norm)
    kind = {"ln": LayerNorm, "rms": RMSNorm}[qk_norm]
    assert isinstance(attention.q_norm.norm, kind) and attention.q_norm.norm.normalized_shape == (8,)
    x, pad = torch.randn(3, 5, 16), torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 5])
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
    assert max_logit <= math.sqrt(8) * (1 + 1e-5)      # |q.k| / sqrt(D) <= ||q|| ||k|| / sqrt(D) = sqrt(D)
    assert 0 <= entropy <= math.log(6)


def test_recording_leaves_the_output_and_cleans_up():
    torch.manual_seed(0)
    attention, x = SelfAttention(16, 2, causal=True), torch.randn(2, 4, 16)
    attention.record = []
    out = attention(x)
    attention.record, plain = None, attention(x)
    torch.testing.assert_close(out, plain)
    model = TinyTransformer(10, causal=True, **SHAPE)
    stats = attention_logits(model, torch.randint(0, 10, (2, 5)))
    assert len(stats) == 2 and all(s > 0 for s, _ in stats)
    assert all(m.record is None for m in model.modules() if isinstance(m, SelfAttention))


def test_recorded_values():
    torch.manual_seed(0)
    attention, x = SelfAttention(16, 2, causal=True), torch.randn(2, 4, 16)
    attention.record = []
    attention(x)
    q, k, _ = attention.qkv(x).view(2, 4, 3, 2, 8).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), -math.inf)
    weights = scores.softmax(-1)
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1).mean()
    assert attention.record[0][0] == pytest.approx(scores.max().item(), rel=1e-6)
    assert attention.record[0][1] == pytest.approx(entropy.item(), rel=1e-5)


def test_placement_pre_is_the_old_pre_ln_exactly():
    tokens = torch.randint(0, 20, (2, 8))
    for pre_ln, placement in ((True, "pre"), (False, "post")):
        torch.manual_seed(0)
        old = TinyTransformer(20, causal=True, pre_ln=pre_ln, **SHAPE)
        torch.manual_seed(0)
        new = TinyTransformer(20, causal=True, placement=placement, **SHAPE)
        assert old.state_dict().keys() == new.state_dict().keys()
        assert torch.equal(old(tokens), new(tokens))
    with pytest.raises(ValueError, match="placement"):
        TinyTransformer(20, placement="middle")


def test_peri_normalizes_each_branch_output():
    torch.manual_seed(0)
    model = TinyTransformer(20, causal=True, placement="peri", **SHAPE)
    block, x = model.blocks[0], torch.randn(2, 8, 16)
    update = block(x) - x                               # two normalized branch outputs, summed
    assert model.norm_f is not None and hasattr(block, "norm2_out")
    assert update.pow(2).mean(-1).max() < 4 + 1e-4      # each branch adds rms 1 (unit weights): |a + b|^2 <= 4 C


@pytest.mark.parametrize("options", [dict(norm="dyt"), dict(qk_norm="ln"), dict(qk_norm="rms"),
                                     dict(placement="peri"), dict(placement="post")])
def test_new_options_work_in_an_ensemble(options):
    train, _, vocab = char_lm_data(16)
    models = [causal_lm(vocab, 16, seed, **SHAPE, **options) for seed in (0, 1)]
    tokens = train[:8, :-1].view(2, 4, 16)
    out = Ensemble(models)(tokens, training=False)
    for e, model in enumerate(models):
        torch.testing.assert_close(out[e], model.eval()(tokens[e]), rtol=1e-4, atol=1e-5)


def test_layer_norm_curves_and_timing():
    model = TinyTransformer(10, causal=True, **SHAPE)
    pairs = layer_norm_curves(model, torch.randint(0, 10, (2, 6)))
    assert len(pairs) == 5                              # 2 per block and the final one
    x_hat = torch.tensor(pairs[0][1], dtype=torch.float64)
    assert x_hat.shape == (10, 16)
    torch.testing.assert_close(x_hat.mean(-1), torch.zeros(10, dtype=torch.float64), atol=1e-9, rtol=0)
    times = time_forward_backward({"a": LayerNorm(8), "b": RMSNorm(8)}, (4, 8), repeats=3)
    assert set(times) == {"a", "b"} and all(t > 0 for t in times.values())


def test_stream_sizes_of_a_fresh_model_are_stream_growth():
    from normbook.common.charlm import stream_growth
    from normbook.common.charlm import stream_sizes
    from normbook.ch09_norms_in_transformers import trained_probe
    train, _, vocab = char_lm_data(16)
    model = causal_lm(vocab, 16, 3, n_layers=3, d_model=16, n_heads=2, placement="peri")
    expected = stream_growth(seed=3, n_layers=3, d_model=16, n_heads=2, placement="peri", windows=16)
    assert stream_sizes(model, train[:16]) == pytest.approx(expected, rel=1e-6)
    probe = trained_probe(model, train[:16])
    assert len(probe["attention"]) == 3 and len(probe["curves"]) == 3 * 4 + 1
