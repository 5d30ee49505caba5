"""normlib.nn's BatchRenorm1d and BatchRenorm2d: BatchNorm at rmax=1, dmax=0
and in eval, Ioffe's formula (float64 autograd, r and d detached) in
training, and clear errors.
"""
import pytest
import torch
from test_nn import (
    assert_same_buffers,
    close,
    close_outcomes,
    forward_backward,
    randn,
)
from torch import nn as tnn

from normlib import nn as ours

pytestmark = pytest.mark.filterwarnings("error")

# id: normlib class, its BatchNorm twin's name, input shape
LAYOUTS = {"1d-(N,C)": ("BatchRenorm1d", "BatchNorm1d", (8, 3)),
           "1d-(N,C,L)": ("BatchRenorm1d", "BatchNorm1d", (4, 3, 5)),
           "2d": ("BatchRenorm2d", "BatchNorm2d", (2, 3, 4, 5))}
CONFIGS = {"default": {}, "affine=False": {"affine": False},
           "bias=False": {"bias": False}, "momentum=None": {"momentum": None}}


def make(library, name, seed=0, **kwargs):
    """A float64 module with a random weight and bias (the same for every
    library at one seed)."""
    module = getattr(library, name)(3, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for i, (param_name, p) in enumerate(module.named_parameters()):
            value = randn(*p.shape, seed=seed + i)
            p.copy_(1 + 0.5 * value if param_name == "weight" else value)
    return module


def drifting_batch(shape, step):
    """Batches whose mean and scale drift, so the running statistics
    matter."""
    return (1 + step) * randn(*shape, seed=20 + step) + step


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_rmax_1_dmax_0_is_batchnorm(layout, config):
    name, twin, shape = LAYOUTS[layout]
    renorm = make(ours, name, rmax=1.0, dmax=0.0, **CONFIGS[config])
    twins = [make(ours, twin, **CONFIGS[config]),
             make(tnn, twin, **CONFIGS[config])]
    for step in range(3):
        x, dy = drifting_batch(shape, step), randn(*shape, seed=40 + step)
        outcome = forward_backward(renorm, x, dy)
        for bn in twins:
            close_outcomes(outcome, forward_backward(bn, x, dy))
            assert_same_buffers(renorm, bn)
    for m in (renorm, *twins):
        m.eval()
    x = randn(*shape, seed=50)
    for bn in twins:
        close(renorm(x), bn(x))


def renorm_reference(x, weight, bias, running_mean, running_var, eps, rmax,
                     dmax):
    """Algorithm 1 of Ioffe 2017 in float64 autograd: r and d detached.

    Returns y and whether each clip bound was hit in some channel.
    """
    axes = tuple(a for a in range(x.ndim) if a != 1)
    shape = [1] * x.ndim
    shape[1] = -1
    mean_b = x.mean(axes, keepdim=True)
    sigma_b = (x.var(axes, correction=0, keepdim=True) + eps).sqrt()
    sigma = (running_var.reshape(shape) + eps).sqrt()
    r_raw = sigma_b / sigma
    d_raw = (mean_b - running_mean.reshape(shape)) / sigma
    r = r_raw.clamp(1 / rmax, rmax).detach()
    d = d_raw.clamp(-dmax, dmax).detach()
    y = ((x - mean_b) / sigma_b * r + d) * weight.reshape(shape)
    clipped = bool(((r_raw > rmax) | (r_raw < 1 / rmax)).any()
                   or (d_raw.abs() > dmax).any())
    return y + bias.reshape(shape), clipped


@pytest.mark.parametrize("rmax, dmax, clipped", [(1.2, 0.3, True),
                                                 (10.0, 10.0, False),
                                                 (1.0, 0.0, True)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_training_matches_the_papers_formula(layout, rmax, dmax, clipped):
    name, twin, shape = LAYOUTS[layout]
    renorm = make(ours, name, rmax=rmax, dmax=dmax)
    bn = make(tnn, twin)
    for step in range(3):
        x, dy = drifting_batch(shape, step), randn(*shape, seed=40 + step)
        x_ref = x.clone().requires_grad_()
        weight, bias = (p.detach().clone().requires_grad_()
                        for p in (renorm.weight, renorm.bias))
        y_ref, was_clipped = renorm_reference(
            x_ref, weight, bias, renorm.running_mean, renorm.running_var,
            renorm.eps, rmax, dmax)
        y_ref.backward(dy)
        renorm.zero_grad()
        y, dx, grads = forward_backward(renorm, x, dy)
        # the clips are active (or not) as this case means them to be
        assert was_clipped == clipped or step == 0
        close(y, y_ref.detach())
        close(dx, x_ref.grad)
        close(grads["weight"], weight.grad)
        close(grads["bias"], bias.grad)
        # the running statistics move as BatchNorm's, whatever r and d
        bn(x)
        assert_same_buffers(renorm, bn)


def test_eval_is_batchnorm_with_the_running_statistics():
    renorm, bn = make(ours, "BatchRenorm2d"), make(tnn, "BatchNorm2d")
    for step in range(3):
        x = drifting_batch((2, 3, 4, 5), step)
        renorm(x), bn(x)
    renorm.eval(), bn.eval()
    x, dy = randn(2, 3, 4, 5, seed=60), randn(2, 3, 4, 5, seed=61)
    y, dx, grads = forward_backward(renorm, x, dy)
    y_ref, dx_ref, grads_ref = forward_backward(bn, x, dy)
    close(y, y_ref)
    close(dx, dx_ref)
    for n in grads:
        close(grads[n], grads_ref[n])
    assert_same_buffers(renorm, bn)     # eval leaves them alone


def test_ramping_rmax_and_dmax_as_attributes():
    renorm = make(ours, "BatchRenorm1d")
    bn = make(ours, "BatchNorm1d")
    renorm.rmax, renorm.dmax = 1, 0     # the paper's start: BatchNorm
    x = drifting_batch((8, 3), 2)
    close(renorm(x), bn(x))
    renorm.rmax, renorm.dmax = 3, 5     # relaxed: no longer BatchNorm
    assert not torch.allclose(renorm(x), bn(x))
    assert "rmax=3, dmax=5" in repr(renorm)


def fully_clipped(name, shape):
    """A module whose r and d sit on their bounds in every channel (running
    statistics far from the batch's, momentum 0 so they stay there): r and
    d are then constant near x, and the numerical gradient is the
    stop-gradient one."""
    module = make(ours, name, rmax=1.5, dmax=0.5, momentum=0.0)
    with torch.no_grad():
        module.running_mean.fill_(10.0)
        module.running_var.fill_(100.0)
    return module, randn(*shape, seed=70)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_and_gradgradcheck_where_r_and_d_are_clipped(layout):
    name, _, shape = LAYOUTS[layout]
    module, x = fully_clipped(name, shape)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_()
              for p in module.parameters()]

    def call(x, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (x,))

    inputs = (x.requires_grad_(), *params)
    assert torch.autograd.gradcheck(call, inputs)
    assert torch.autograd.gradgradcheck(call, inputs)


def test_state_dict_is_batchnorms():
    renorm, bn = make(ours, "BatchRenorm2d"), make(tnn, "BatchNorm2d", seed=9)
    bn(drifting_batch((2, 3, 4, 5), 1))
    assert list(renorm.state_dict()) == list(bn.state_dict())
    renorm.load_state_dict(bn.state_dict())
    renorm.eval(), bn.eval()
    x = randn(2, 3, 4, 5, seed=80)
    close(renorm(x), bn(x))


def test_float32_large_offset_and_constant_channel_stay_finite():
    x = 1e6 + randn(64, 8, seed=90)
    x[:, 2] = 5.0                       # one constant channel
    y32 = ours.BatchRenorm1d(8)(x.float().requires_grad_())
    y64 = ours.BatchRenorm1d(8, dtype=torch.float64)(x)
    y32.backward(torch.ones_like(y32))
    assert torch.isfinite(y32).all()
    # half an ulp of 1e6 in float32 (3e-2) is what any float32 mean carries
    assert (y32.double() - y64).abs().max() < 0.3


def test_empty_batch_gives_an_empty_output():
    renorm = ours.BatchRenorm1d(3)
    y = renorm(torch.zeros(0, 3))
    assert y.shape == (0, 3) and renorm.running_mean.eq(0).all()


ERRORS = {
    "rmax<1": (lambda: ours.BatchRenorm1d(3, rmax=0.5), ValueError,
               r"\brmax\b"),
    "rmax-nan": (lambda: ours.BatchRenorm1d(3, rmax=float("nan")),
                 ValueError, r"\brmax\b"),
    "dmax<0": (lambda: ours.BatchRenorm2d(3, dmax=-1.0), ValueError,
               r"\bdmax\b"),
    "rmax<1-set": (lambda: setattr(ours.BatchRenorm1d(3), "rmax", 0.9),
                   ValueError, r"\brmax\b"),
    "dmax<0-set": (lambda: setattr(ours.BatchRenorm1d(3), "dmax", -0.1),
                   ValueError, r"\bdmax\b"),
    "eps=0": (lambda: ours.BatchRenorm1d(3, eps=0.0), ValueError, r"\beps\b"),
    "eps<0": (lambda: ours.BatchRenorm2d(3, eps=-1e-5), ValueError,
              r"\beps\b"),
    "no-running-stats": (
        lambda: ours.BatchRenorm1d(3, track_running_stats=False),
        ValueError, r"\btrack_running_stats\b"),
    "wrong-channels": (lambda: ours.BatchRenorm2d(3)(torch.zeros(2, 4, 2, 2)),
                       RuntimeError, r"\bnum_features\b"),
    "wrong-ndim": (lambda: ours.BatchRenorm2d(3)(torch.zeros(2, 3, 4)),
                   ValueError, r"\binput\b"),
    "one-value-per-channel": (
        lambda: ours.BatchRenorm1d(3)(torch.zeros(1, 3)), ValueError,
        "more than 1 value per channel"),
    "one-value-per-channel-2d": (
        lambda: ours.BatchRenorm2d(3)(torch.zeros(1, 3, 1, 1)), ValueError,
        "more than 1 value per channel"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_arguments_raise_clear_errors(case):
    call, error, message = ERRORS[case]
    with pytest.raises(error, match=message):
        call()
