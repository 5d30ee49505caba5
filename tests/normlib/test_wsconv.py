"""normlib.nn.WSConv2d against the authors' Weight Standardization written
out in float64 torch, and against torch.nn.Conv2d's interface.
"""
import inspect

import pytest
import torch
import torch.nn.functional as TF
from test_nn import close, randn
from torch import nn as tnn

from normlib import nn as ours

pytestmark = pytest.mark.filterwarnings("error")


def reference_weight(weight, eps=1e-5):
    """The authors' code (Batch-Channel-Normalization,
    imagenet/models/layers.py): W minus its mean per output channel, over
    sqrt(unbiased variance + eps)."""
    centered = weight - weight.mean(dim=(1, 2, 3), keepdim=True)
    var = centered.reshape(weight.shape[0], -1).var(dim=1)      # unbiased
    return centered / (var + eps).sqrt().reshape(-1, 1, 1, 1)


# id: constructor args, kwargs, input shape
CASES = {
    "3x3": ((4, 6, 3), {"padding": 1}, (2, 4, 5, 5)),
    "stride-dilation-no-bias": ((3, 5, (3, 2)),
                                {"stride": 2, "dilation": (1, 2),
                                 "bias": False}, (2, 3, 7, 8)),
    "groups": ((4, 6, 3), {"groups": 2, "padding": 1}, (2, 4, 4, 4)),
    "1x1": ((3, 4, 1), {}, (2, 3, 4, 4)),
    "reflect": ((2, 3, 3), {"padding": 1, "padding_mode": "reflect"},
                (1, 2, 4, 5)),
    "eps": ((2, 3, 3), {"eps": 1e-3}, (1, 2, 4, 4)),
    # 72 * 1152 weights: normalize's fused torch steps
    "large": ((128, 72, 3), {"padding": 1}, (1, 128, 4, 4)),
}


def pair(args, kwargs):
    """WSConv2d and torch's Conv2d with the same float64 parameters."""
    eps = kwargs.get("eps", 1e-5)
    conv_kwargs = {k: v for k, v in kwargs.items() if k != "eps"}
    mine = ours.WSConv2d(*args, **kwargs, dtype=torch.float64)
    theirs = tnn.Conv2d(*args, **conv_kwargs, dtype=torch.float64)
    theirs.load_state_dict(mine.state_dict())
    return mine, theirs, eps


@pytest.mark.parametrize("case", CASES)
def test_matches_the_authors_formula_forward_and_backward(case):
    args, kwargs, shape = CASES[case]
    mine, theirs, eps = pair(args, kwargs)
    x, x_ref = randn(*shape, seed=1), randn(*shape, seed=1)
    x.requires_grad_(), x_ref.requires_grad_()
    y = mine(x)
    # the reference: Conv2d's own forward with the standardized weight
    y_ref = theirs._conv_forward(x_ref, reference_weight(theirs.weight, eps),
                                 theirs.bias)
    dy = randn(*y.shape, seed=2)
    y.backward(dy), y_ref.backward(dy)
    close(y, y_ref)
    close(x.grad, x_ref.grad)
    for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
        close(p.grad, q.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", ["3x3", "groups", "1x1"])
def test_standardized_weight_has_zero_mean_and_unit_variance(case):
    args, kwargs, _ = CASES[case]
    conv = ours.WSConv2d(*args, **kwargs, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.mul_(7).add_(3)       # far from standardized already
    w = conv.weight.reshape(conv.out_channels, -1)
    w_hat = conv.standardized_weight().reshape(conv.out_channels, -1)
    close(w_hat.mean(dim=1), torch.zeros_like(w_hat[:, 0]))
    # unit variance up to eps: var(W_hat) = var / (var + eps), unbiased
    var = w.var(dim=1)
    close(w_hat.var(dim=1), var / (var + conv.eps))


def test_gradcheck_and_gradgradcheck():
    conv = ours.WSConv2d(2, 3, 2, dtype=torch.float64)
    x = randn(1, 2, 3, 3, seed=3).requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in conv.parameters()]

    def call(x, weight, bias):
        return torch.func.functional_call(
            conv, {"weight": weight, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(call, (x, *params))
    assert torch.autograd.gradgradcheck(call, (x, *params))


def test_differs_from_std_plus_eps_by_a_factor_per_channel():
    """The WeightStandardization README divides by std + 1e-5; the two
    standardized weights differ only by a factor per output channel."""
    conv = ours.WSConv2d(8, 4, 3, dtype=torch.float64)
    w = conv.weight
    std, mean = torch.std_mean(w, dim=(1, 2, 3), keepdim=True)  # unbiased
    ratio = conv.standardized_weight() / ((w - mean) / (std + 1e-5))
    close(ratio, ratio[:, :1, :1, :1].expand_as(ratio))
    # the factor is within eps / (2 var) + eps / std of 1
    var = std.reshape(-1) ** 2
    bound = 1e-5 / (2 * var) + 1e-5 / var.sqrt()
    assert ((ratio[:, 0, 0, 0] - 1).abs() <= bound).all()


def test_state_dict_signature_and_repr_like_conv2d():
    mine = ours.WSConv2d(3, 4, 3, padding=1)
    theirs = tnn.Conv2d(3, 4, 3, padding=1)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    mine.load_state_dict(theirs.state_dict(), strict=True)
    assert isinstance(mine, tnn.Conv2d)
    torch_params = inspect.signature(tnn.Conv2d).parameters
    ours_params = inspect.signature(ours.WSConv2d).parameters
    assert [(p.name, p.default) for p in torch_params.values()] == [
        (p.name, p.default) for p in ours_params.values()][:-1]
    assert repr(mine) == "WS" + repr(theirs)[:-1] + ", eps=1e-05)"


def test_constant_filter_gives_zeros_not_nan():
    conv = ours.WSConv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight[1] = 0.25
    w_hat = conv.standardized_weight()
    w_hat.sum().backward()
    assert w_hat[1].eq(0).all() and torch.isfinite(conv.weight.grad).all()


def test_float32_matches_float64():
    mine64, _, _ = pair((16, 8, 3), {})
    mine32 = ours.WSConv2d(16, 8, 3)
    mine32.load_state_dict(mine64.state_dict())
    x = randn(2, 16, 6, 6, seed=4)
    close(mine32(x.float()).double(), mine64(x), rtol=1e-5, atol=1e-5)


ERRORS = {
    "one-value-per-filter": (lambda: ours.WSConv2d(1, 4, 1), ValueError,
                             r"in_channels/groups=1.*kernel_size"),
    "depthwise-1x1": (lambda: ours.WSConv2d(4, 4, 1, groups=4), ValueError,
                      r"in_channels/groups=1"),
    "eps=0": (lambda: ours.WSConv2d(2, 4, 3, eps=0.0), ValueError,
              r"\beps\b"),
    "eps<0": (lambda: ours.WSConv2d(2, 4, 3, eps=-1.0), ValueError,
              r"\beps\b"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_arguments_raise_clear_errors(case):
    call, error, message = ERRORS[case]
    with pytest.raises(error, match=message):
        call()


def test_wrong_input_channels_raise_as_conv2d():
    with pytest.raises(RuntimeError) as theirs:
        TF.conv2d(torch.zeros(1, 3, 4, 4), torch.zeros(4, 2, 3, 3))
    with pytest.raises(RuntimeError, match="channels") as mine:
        ours.WSConv2d(2, 4, 3)(torch.zeros(1, 3, 4, 4))
    assert str(mine.value) == str(theirs.value)
