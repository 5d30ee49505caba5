"""normbook.ch12_what_norms_cost (costs and numerics): BatchNorm folding,
traffic and memory counts, variance algorithms."""
import numpy as np
import pytest
import torch
from torch import nn

import normlib.nn as ours
from normbook.ch12_what_norms_cost import (
    PASSES,
    autocast_dtypes,
    bandwidth_bound,
    count_traffic,
    fold_bn,
    fold_tiny_cnn,
    low_precision_layer_norm,
    memory_bandwidth,
    offset_rows,
    one_pass_var,
    saved_bytes,
    two_pass_var,
    variance_errors,
    welford_var,
)
from normbook.common.models import TinyCNN
from normbook.common.timing import time_interleaved


def _trained_bn(library, name, channels, dtype):
    """An eval-mode BatchNorm with non-trivial running statistics and affine
    parameters."""
    bn = getattr(library, name)(channels).to(dtype)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return bn.eval()


@pytest.mark.parametrize("library", [nn, ours])
@pytest.mark.parametrize("bias", [True, False])
def test_fold_conv_float64(library, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=bias).double()
    bn = _trained_bn(library, "BatchNorm2d", 8, torch.float64)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected, got = bn(conv(x)), fold_bn(conv, bn)(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-12


@pytest.mark.parametrize("library", [nn, ours])
def test_fold_linear_float64(library):
    torch.manual_seed(1)
    linear = nn.Linear(5, 7).double()
    bn = _trained_bn(library, "BatchNorm1d", 7, torch.float64)
    x = torch.randn(10, 5, dtype=torch.float64)
    with torch.no_grad():
        expected, got = bn(linear(x)), fold_bn(linear, bn)(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-12


def test_fold_leaves_the_originals_alone():
    conv, bn = (nn.Conv2d(1, 4, 3),
                _trained_bn(nn, "BatchNorm2d", 4, torch.float32))
    weight = conv.weight.clone()
    fold_bn(conv, bn)
    assert torch.equal(conv.weight, weight) and conv.bias is not None


def test_fold_tiny_cnn_float32_close():
    torch.manual_seed(0)
    model = TinyCNN("bn").eval()
    for norm in (model.norm1.norm, model.norm2.norm):
        with torch.no_grad():
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        expected, got = model(x), fold_tiny_cnn(model)(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-5
    # the original is untouched
    assert model.norm1.norm.__class__.__name__ == "BatchNorm2d"


def test_fold_errors():
    conv, bn = (nn.Conv2d(1, 4, 3),
                _trained_bn(ours, "BatchNorm2d", 4, torch.float32))
    with pytest.raises(TypeError, match="layer must be"):
        fold_bn(nn.Conv1d(1, 4, 3), bn)
    with pytest.raises(TypeError, match="bn must be"):
        fold_bn(conv, nn.LayerNorm(4))
    with pytest.raises(ValueError, match="eval mode"):
        fold_bn(conv, bn.train())
    with pytest.raises(ValueError, match="num_features=4 but layer has 5"):
        fold_bn(nn.Conv2d(1, 5, 3), bn.eval())
    with pytest.raises(ValueError, match="eval mode"):
        fold_bn(conv, nn.BatchNorm2d(4, track_running_stats=False).eval())


def test_time_interleaved_returns_best_and_median():
    calls = []
    result = time_interleaved({"a": lambda: calls.append("a"),
                               "b": lambda: calls.append("b")},
                              repeats=4, warmup=1)
    assert calls == ["a", "b"] * 5                       # they take turns
    assert set(result) == {"a", "b"}
    assert all(0 <= best <= median for best, median in result.values())


def test_memory_bandwidth_is_sane():
    bandwidth = memory_bandwidth(megabytes=16, repeats=2)
    # 0.1 GB/s .. 10 TB/s
    assert all(1e8 < value < 1e13 for value in bandwidth.values())


def test_bandwidth_bound_counts_passes():
    x = torch.zeros(1000)
    assert bandwidth_bound("LayerNorm", x, 4000.0) == pytest.approx(
        sum(PASSES["LayerNorm"]))
    assert (PASSES["BatchNorm2d"] == (3, 5)
            and PASSES["RMSNorm"] == PASSES["LayerNorm"])


def test_count_traffic_of_fused_kernels():
    x, dy = torch.randn(64, 256), torch.randn(64, 256)
    torch_ln = count_traffic(nn.LayerNorm(256), x, dy)
    assert torch_ln["forward"][0] == pytest.approx(1, abs=0.05)   # read x
    assert torch_ln["forward"][1] == pytest.approx(1, abs=0.05)   # write y
    assert torch_ln["backward"][0] == pytest.approx(2, abs=0.05)  # read dy, x
    ours_ln = count_traffic(ours.LayerNorm(256), x, dy)
    # one op per step of the formula
    assert sum(ours_ln["forward"]) > 2.5


def test_saved_bytes():
    x = torch.randn(32, 128)
    torch_total, _ = saved_bytes(nn.LayerNorm(128), x)
    ours_total, kept = saved_bytes(ours.LayerNorm(128), x)
    size = x.numel() * 4
    assert size <= torch_total < 1.2 * size       # x, plus small statistics
    assert 2 * size <= ours_total < 2.2 * size    # x and xhat
    assert (32, 128) in [shape for shape, _ in kept]


@pytest.mark.parametrize("offset", [0.0, 10.0, 1e3])
def test_variance_algorithms_against_float64(offset):
    x = offset_rows(offset, rows=8, width=256)
    reference = two_pass_var(x.astype(np.float64))
    assert np.allclose(two_pass_var(x), reference, rtol=1e-5)
    assert np.allclose(welford_var(x), reference, rtol=1e-4)
    assert np.allclose(welford_var(x.astype(np.float64)), reference,
                       rtol=1e-12)
    assert np.allclose(one_pass_var(x.astype(np.float64)), reference,
                       rtol=1e-6)


def test_one_pass_fails_at_large_offsets():
    errors = variance_errors([1.0, 1e5], rows=16, width=256)
    assert errors["one-pass"][0][0] < 1e-5
    # wrong, and some negative
    assert errors["one-pass"][1][0] >= 0.5 and errors["one-pass"][1][1] > 0
    assert errors["two-pass"][1][0] < 1e-3


def test_low_precision_layer_norm():
    x = torch.randn(4, 64, dtype=torch.float64)
    expected = nn.functional.layer_norm(x, (64,))
    # eps 1e-5 as torch
    assert torch.allclose(low_precision_layer_norm(x, torch.float64),
                          expected, atol=1e-6)


def test_autocast_dtypes_are_dtypes():
    result = autocast_dtypes()
    assert result["linear"][0] == torch.bfloat16
    assert all(isinstance(a, torch.dtype) and isinstance(b, torch.dtype)
               for name, (a, b) in result.items() if name != "linear")
