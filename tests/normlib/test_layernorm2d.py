"""normlib.nn.LayerNorm2d against timm's LayerNorm2d and ConvNeXt's
channels-first LayerNorm, in float64; and how it differs from GroupNorm(1, C)
and LayerNorm([C, H, W]).

timm is not installed beside our torch, so the two definitions are written
out below as the references.
"""
import inspect

import pytest
import torch
import torch.nn.functional as F
from test_nn import close_outcomes, forward_backward
from torch import nn as tnn

from normlib import nn as ours

pytestmark = pytest.mark.filterwarnings("error")

TOL = dict(rtol=1e-10, atol=1e-12)


class TimmLayerNorm2d(tnn.LayerNorm):
    """timm's LayerNorm2d (huggingface/pytorch-image-models,
    timm/layers/norm.py), without its optional fused kernel."""

    def __init__(self, num_channels, eps=1e-6, affine=True, **kwargs):
        super().__init__(num_channels, eps=eps, elementwise_affine=affine,
                         **kwargs)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


def convnext_channels_first(x, weight, bias, eps=1e-6):
    """ConvNeXt's LayerNorm with data_format="channels_first"
    (facebookresearch/ConvNeXt, models/convnext.py)."""
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return weight[:, None, None] * x + bias[:, None, None]


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def pair(channels, seed=0, dtype=torch.float64, **kwargs):
    """(ours, timm's), with the same random weight and bias."""
    mine = ours.LayerNorm2d(channels, **kwargs, dtype=dtype)
    theirs = TimmLayerNorm2d(channels, affine=kwargs.pop(
        "elementwise_affine", True), **kwargs, dtype=dtype)
    with torch.no_grad():
        for i, (name, p) in enumerate(theirs.named_parameters()):
            value = randn(*p.shape, seed=seed + i).to(dtype)
            p.copy_(1 + 0.5 * value if name == "weight" else value)
            getattr(mine, name).copy_(p)
    return mine, theirs


# id: constructor kwargs, input shape
CASES = {
    "(2,4,3,5)": ({}, (2, 4, 3, 5)),
    "eps=1e-5": ({"eps": 1e-5}, (2, 4, 3, 5)),
    "bias=False": ({"bias": False}, (2, 4, 3, 3)),
    "no-affine": ({"elementwise_affine": False}, (2, 4, 3, 3)),
    "N=1-H=W=1": ({}, (1, 6, 1, 1)),
    "C=1": ({}, (2, 1, 3, 3)),
}


@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_timm(case):
    kwargs, shape = CASES[case]
    mine, theirs = pair(shape[1], **kwargs)
    x, dy = 3 * randn(*shape, seed=10) + 1, randn(*shape, seed=11)
    close_outcomes(forward_backward(mine, x, dy),
                   forward_backward(theirs, x, dy), **TOL)


def test_forward_matches_convnexts_channels_first_formula():
    mine, _ = pair(4)
    x = 3 * randn(2, 4, 3, 5, seed=20) + 1
    expected = convnext_channels_first(x, mine.weight, mine.bias)
    torch.testing.assert_close(mine(x), expected, **TOL)


def test_gradcheck():
    mine, _ = pair(3)
    x = randn(2, 3, 2, 2, seed=30).requires_grad_()
    weight, bias = (p.detach().clone().requires_grad_()
                    for p in (mine.weight, mine.bias))

    def call(x, weight, bias):
        return torch.func.functional_call(
            mine, {"weight": weight, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(call, (x, weight, bias))


def test_backward_runs_the_derived_formula():
    """The gradient comes from normlib's autograd.Function (whose backward
    is normalize_backward), not from autograd of the forward."""
    x = randn(2, 3, 2, 2).requires_grad_()
    y = ours.LayerNorm2d(3, dtype=torch.float64)(x)
    assert type(y.grad_fn).__name__ == "PermuteBackward0"
    function = y.grad_fn.next_functions[0][0]
    assert type(function).__name__ == "_NormalizeBackward"


def test_parameters_attributes_and_repr_match_timm():
    mine, theirs = (cls(4) for cls in (ours.LayerNorm2d, TimmLayerNorm2d))
    assert list(mine.state_dict()) == list(theirs.state_dict()) == [
        "weight", "bias"]
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(mine.state_dict()[key], value,
                                   rtol=0, atol=0)
    for attr in ("normalized_shape", "eps", "elementwise_affine"):
        assert getattr(mine, attr) == getattr(theirs, attr), attr
    assert repr(mine) == repr(theirs).replace("Timm", "")
    assert repr(ours.LayerNorm2d(4, bias=False)) == repr(
        TimmLayerNorm2d(4, bias=False)).replace("Timm", "")


def test_default_eps_is_convnexts_and_timms():
    default = inspect.signature(ours.LayerNorm2d).parameters["eps"].default
    assert default == 1e-6
    assert default == inspect.signature(
        TimmLayerNorm2d).parameters["eps"].default
    assert default == inspect.signature(
        convnext_channels_first).parameters["eps"].default


@pytest.mark.parametrize("direction", ["timm->normlib", "normlib->timm"])
def test_state_dict_interchange_with_timm(direction):
    mine, theirs = pair(4, seed=40)[0], pair(4, seed=50)[1]
    source, target = ((theirs, mine) if direction == "timm->normlib"
                      else (mine, theirs))
    target.load_state_dict(source.state_dict(), strict=True)
    x = randn(2, 4, 3, 3, seed=60)
    torch.testing.assert_close(target(x), source(x), **TOL)


# ---- not GroupNorm(1, C), not LayerNorm([C, H, W]) --------------------------

def test_statistics_are_per_pixel_not_per_sample():
    """LayerNorm2d averages over C at each (n, h, w); GroupNorm(1, C) and
    LayerNorm([C, H, W]) average over (C, H, W) for each n."""
    x = 3 * randn(2, 4, 3, 5, seed=70) + randn(1, 1, 3, 5, seed=71)
    per_pixel = ours.LayerNorm2d(4, elementwise_affine=False)(x)
    per_sample = [tnn.GroupNorm(1, 4, eps=1e-6, affine=False)(x),
                  tnn.LayerNorm([4, 3, 5], eps=1e-6,
                                elementwise_affine=False)(x)]
    zeros = torch.zeros(2, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(per_pixel.mean(1), zeros, **TOL)
    torch.testing.assert_close(per_pixel.var(1, unbiased=False),
                               torch.full_like(zeros, 1.0), atol=1e-5,
                               rtol=0)
    for y in per_sample:
        torch.testing.assert_close(y.mean((1, 2, 3)), zeros[:, 0, 0], **TOL)
        assert y.mean(1).abs().max() > 0.1     # pixels keep their offsets
        assert (y - per_pixel).abs().max() > 0.1


def test_parameter_shapes_per_channel_or_per_value():
    """LayerNorm2d and GroupNorm(1, C): one weight and bias per channel;
    LayerNorm([C, H, W]): one per value, tied to the image size."""
    shapes = {
        name: {n: tuple(p.shape) for n, p in module.named_parameters()}
        for name, module in (("LayerNorm2d", ours.LayerNorm2d(4)),
                             ("GroupNorm", tnn.GroupNorm(1, 4)),
                             ("LayerNorm", tnn.LayerNorm([4, 3, 5])))}
    assert shapes == {"LayerNorm2d": {"weight": (4,), "bias": (4,)},
                      "GroupNorm": {"weight": (4,), "bias": (4,)},
                      "LayerNorm": {"weight": (4, 3, 5), "bias": (4, 3, 5)}}


def test_one_pixel_images_are_where_the_three_agree():
    x = 3 * randn(3, 4, 1, 1, seed=80) + 1
    per_pixel = ours.LayerNorm2d(4, eps=1e-5, elementwise_affine=False)(x)
    for module in (tnn.GroupNorm(1, 4, affine=False),
                   tnn.LayerNorm([4, 1, 1], elementwise_affine=False)):
        torch.testing.assert_close(per_pixel, module(x), **TOL)


# ---- half precision, numerics ----------------------------------------------

class ChannelsLast(tnn.Module):
    """normlib's LayerNorm over the last axis of the permuted input."""

    def __init__(self, layer_norm):
        super().__init__()
        self.layer_norm = layer_norm

    def forward(self, x):
        y = self.layer_norm(x.permute(0, 2, 3, 1))     # N, H, W, C
        return y.permute(0, 3, 1, 2)                    # N, C, H, W


@pytest.mark.parametrize("module", ["float32", "input's"],
                         ids=["float32-module", "half-module"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16],
                         ids=["bfloat16", "float16"])
def test_half_input_is_normlibs_layer_norm_over_channels(dtype, module):
    """The same numbers, bit for bit, as normlib's LayerNorm on the
    channels-last input, and the dtypes of timm's."""
    module_dtype = torch.float32 if module == "float32" else dtype
    mine, theirs = pair(4, dtype=module_dtype)
    layer_norm = ours.LayerNorm(4, eps=1e-6, dtype=module_dtype)
    layer_norm.load_state_dict(mine.state_dict())
    x = (3 * randn(2, 4, 3, 3, seed=90) + 1).to(dtype)
    dy = randn(2, 4, 3, 3, seed=91).to(dtype)
    y, dx, grads = forward_backward(mine, x, dy)
    y_last, dx_last, grads_last = forward_backward(ChannelsLast(layer_norm),
                                                   x, dy)
    y_ref, dx_ref, grads_ref = forward_backward(theirs, x, dy)
    torch.testing.assert_close(y, y_last, rtol=0, atol=0)
    torch.testing.assert_close(dx, dx_last, rtol=0, atol=0)
    for name in grads:
        torch.testing.assert_close(grads[name],
                                   grads_last["layer_norm." + name],
                                   rtol=0, atol=0)
        assert grads[name].dtype == grads_ref[name].dtype, name
    assert y.dtype == dx.dtype == y_ref.dtype == dx_ref.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16],
                         ids=["bfloat16", "float16"])
def test_half_input_is_no_less_accurate_than_timm(dtype):
    """y and dx against float64 on the same rounded input: within 2x the
    error of timm's (torch's kernels) plus a floor of 3e-7 (relative)."""
    x = (3 * randn(4, 16, 6, 6, seed=100) + 1).to(dtype)
    dy = randn(4, 16, 6, 6, seed=101).to(dtype)
    mine, theirs = pair(16, dtype=torch.float32)
    reference = pair(16)[1]
    exact = forward_backward(reference, x.double(), dy.double())[:2]
    for got, ref_got, want in zip(forward_backward(mine, x, dy)[:2],
                                  forward_backward(theirs, x, dy)[:2], exact):
        error, timm_error = ((a.double() - want).norm() / want.norm()
                             for a in (got, ref_got))
        assert error <= 2 * timm_error + 3e-7, (error, timm_error)


def test_constant_pixels_give_zeros_and_finite_gradients():
    """A pixel whose channels are equal (a padded border, a flat region)
    has variance 0: the output there is the bias, not NaN."""
    x = randn(2, 4, 3, 3, seed=110, dtype=torch.float32)
    x[:, :, 0, :] = 5.0
    x[1] = 0.0
    x.requires_grad_()
    norm = ours.LayerNorm2d(4, elementwise_affine=False)
    y = norm(x)
    y.backward(torch.ones_like(y))
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert (y[:, :, 0, :] == 0).all() and (y[1] == 0).all()


def test_float32_large_offset_stays_close_to_float64():
    """1e6 + noise per pixel: no catastrophic cancellation (half an ulp of
    1e6 in float32 is 3e-2 of a unit-std signal)."""
    x = (1e6 + randn(2, 32, 3, 3, seed=120)).float().requires_grad_()
    y = ours.LayerNorm2d(32)(x)
    y.backward(torch.ones_like(y))
    reference = ours.LayerNorm2d(32).double()(x.detach().double())
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert (y.double() - reference).abs().max() < 0.3


# ---- bad input --------------------------------------------------------------
# id: call(class), error type, regex naming the argument, timm raises too
ERRORS = {
    "3D": (lambda M: M(4)(torch.zeros(2, 4, 3)),
           RuntimeError, r"\binput\b", True),
    "5D": (lambda M: M(4)(torch.zeros(2, 4, 3, 3, 3)),
           RuntimeError, r"\binput\b", True),
    "channels": (lambda M: M(4)(torch.zeros(2, 3, 5, 4)),
                 RuntimeError, "num_channels=4", True),
    "channels-last-input": (lambda M: M(4)(torch.zeros(2, 3, 3, 4)),
                            RuntimeError, "num_channels=4", True),
    "mixed-dtype": (lambda M: M(4)(torch.zeros(2, 4, 3, 3,
                                               dtype=torch.float64)),
                    RuntimeError, "mixed dtype", True),
    "eps=0": (lambda M: M(4, eps=0.0), ValueError, r"\beps\b", False),
    "eps<0": (lambda M: M(4, eps=-1e-6), ValueError, r"\beps\b", False),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_raises_naming_the_argument(case):
    call, error, message, timm_raises = ERRORS[case]
    with pytest.raises(error, match=message):
        call(ours.LayerNorm2d)
    if timm_raises:
        with pytest.raises(error):
            call(TimmLayerNorm2d)
