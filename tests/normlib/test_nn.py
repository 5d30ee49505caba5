"""normlib.nn against torch.nn: same module, input and dy in float64, compared.

Covers forward and backward, gradcheck of the derived backward, running
statistics and train/eval, state_dict interchange, constructor signatures and
reprs, the padding mask of sequence BatchNorm, errors, float32 robustness,
ImageRMSNorm, and GhostBatchNorm1d.
"""
import inspect

import pytest
import torch
from torch import nn as tnn

from normlib import nn as ours

pytestmark = pytest.mark.filterwarnings("error")

TOL = dict(rtol=1e-10, atol=1e-12)
BATCH_NORMS = ("BatchNorm1d", "BatchNorm2d", "SequenceBatchNorm")
TWINS = ("BatchNorm1d", "BatchNorm2d", "InstanceNorm1d", "InstanceNorm2d",
         "LayerNorm", "GroupNorm", "RMSNorm")


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def close(a, b, **tol):
    torch.testing.assert_close(a, b, **(tol or TOL))


def pair(name, args, kwargs, seed=0):
    """(normlib module, its torch twin), float64, with the same random weight
    and bias.

    SequenceBatchNorm's twin is torch's BatchNorm1d, run on the transposed
    input (see `run`).
    """
    torch_name = "BatchNorm1d" if name == "SequenceBatchNorm" else name
    mine = getattr(ours, name)(*args, **kwargs, dtype=torch.float64)
    theirs = getattr(tnn, torch_name)(*args, **kwargs, dtype=torch.float64)
    theirs.channels_last = name == "SequenceBatchNorm"
    with torch.no_grad():
        for i, (param_name, p) in enumerate(theirs.named_parameters()):
            value = randn(*p.shape, seed=seed + i)
            p.copy_(1 + 0.5 * value if param_name == "weight" else value)
            getattr(mine, param_name).copy_(p)
    return mine, theirs


def run(module, x):
    """Call a module; torch's BatchNorm1d stands in for SequenceBatchNorm on
    (B, C, T)."""
    if getattr(module, "channels_last", False):
        return module(x.transpose(1, 2)).transpose(1, 2)
    return module(x)


def forward_backward(module, x, dy):
    """Output, input gradient and parameter gradients of
    sum(module(x) * dy)."""
    x = x.clone().requires_grad_()
    y = run(module, x)
    y.backward(dy)
    return (y.detach(), x.grad,
            {n: p.grad for n, p in module.named_parameters()})


def close_outcomes(got, expected, **tol):
    """Two `forward_backward` results agree: the output, the input gradient
    and every parameter's gradient."""
    (y, dx, grads), (y_ref, dx_ref, grads_ref) = got, expected
    close(y, y_ref, **tol)
    close(dx, dx_ref, **tol)
    assert grads.keys() == grads_ref.keys()
    for n in grads:
        close(grads[n], grads_ref[n], **tol)


# id: class name, constructor args, constructor kwargs, input shape
CASES = {
    "BatchNorm1d-(N,C)": ("BatchNorm1d", (3,), {}, (8, 3)),
    "BatchNorm1d-(N,C,L)": ("BatchNorm1d", (3,), {}, (4, 3, 5)),
    "BatchNorm1d-N=1": ("BatchNorm1d", (3,), {}, (1, 3, 6)),
    "BatchNorm1d-C=1": ("BatchNorm1d", (1,), {}, (6, 1)),
    "BatchNorm1d-affine=False": ("BatchNorm1d", (3,), {"affine": False},
                                 (4, 3, 5)),
    "BatchNorm1d-bias=False": ("BatchNorm1d", (3,), {"bias": False},
                               (4, 3, 5)),
    "BatchNorm2d": ("BatchNorm2d", (3,), {}, (2, 3, 4, 5)),
    "BatchNorm2d-C=1": ("BatchNorm2d", (1,), {}, (3, 1, 2, 2)),
    "SequenceBatchNorm-(B,T,C)": ("SequenceBatchNorm", (4,), {}, (3, 5, 4)),
    "LayerNorm-(B,T,C)": ("LayerNorm", (4,), {}, (2, 5, 4)),
    "LayerNorm-multi-dim": ("LayerNorm", ((3, 4),), {}, (2, 3, 4)),
    "LayerNorm-N=1": ("LayerNorm", (6,), {}, (1, 6)),
    # regression: weight.grad was dy * xhat * weight
    "LayerNorm-unbatched": ("LayerNorm", (6,), {}, (6,)),
    "LayerNorm-unbatched-multi-dim": ("LayerNorm", ((2, 3),), {}, (2, 3)),
    "LayerNorm-bias=False": ("LayerNorm", (4,), {"bias": False}, (2, 5, 4)),
    "LayerNorm-no-affine": ("LayerNorm", (4,), {"elementwise_affine": False},
                            (2, 5, 4)),
    "GroupNorm-(N,C,H,W)": ("GroupNorm", (2, 4), {}, (2, 4, 3, 3)),
    "GroupNorm-(N,C,L)": ("GroupNorm", (3, 6), {}, (2, 6, 5)),
    "GroupNorm-(N,C)": ("GroupNorm", (1, 4), {}, (2, 4)),
    "GroupNorm-affine=False": ("GroupNorm", (2, 4), {"affine": False},
                               (2, 4, 3)),
    "GroupNorm-bias=False": ("GroupNorm", (2, 4), {"bias": False},
                             (2, 4, 3)),
    "RMSNorm-(B,T,C)": ("RMSNorm", (4,), {}, (2, 5, 4)),
    "RMSNorm-multi-dim-eps": ("RMSNorm", ((3, 4),), {"eps": 1e-6},
                              (2, 3, 4)),
    "RMSNorm-no-affine": ("RMSNorm", (4,), {"elementwise_affine": False},
                          (2, 5, 4)),
    "RMSNorm-unbatched": ("RMSNorm", (6,), {}, (6,)),
}


@pytest.mark.parametrize("case", CASES)
def test_module_matches_torch(case):
    name, args, kwargs, shape = CASES[case]
    mine, theirs = pair(name, args, kwargs)
    x, dy = 3 * randn(*shape, seed=10) + 1, randn(*shape, seed=11)
    close_outcomes(forward_backward(mine, x, dy),
                   forward_backward(theirs, x, dy))


def gradcheck_module(module, x, **kwargs):
    """torch.autograd.gradcheck of module(x) with respect to x and every
    parameter."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_()
              for _, p in module.named_parameters()]

    def call(x, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (x,),
                                          kwargs)

    assert torch.autograd.gradcheck(call,
                                    (x.clone().requires_grad_(), *params))


@pytest.mark.parametrize("case", CASES)
def test_gradcheck(case):
    name, args, kwargs, shape = CASES[case]
    gradcheck_module(pair(name, args, kwargs)[0], randn(*shape, seed=12))


def pad_mask_from_lengths(lengths, steps):
    """(batch, steps) bool, True = padding: sequence i has lengths[i] real
    steps."""
    return torch.arange(steps)[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("name, shape", [("SequenceBatchNorm", (4, 5, 3)),
                                         ("BatchNorm1d", (4, 3, 5))])
def test_gradcheck_masked(name, shape):
    gradcheck_module(pair(name, (3,), {})[0], randn(*shape, seed=13),
                     pad_mask=pad_mask_from_lengths([5, 2, 0, 3], 5))


# ---- running statistics and train / eval -----------------------------------
RUNNING = {
    "momentum=0.1": {},
    "momentum=None": {"momentum": None},
    "momentum=0.5-affine=False": {"momentum": 0.5, "affine": False},
    "bias=False": {"bias": False},
    "no-tracking": {"track_running_stats": False},
}
BN_SHAPES = {"BatchNorm1d-(N,C)": ("BatchNorm1d", (16, 3)),
             "BatchNorm1d-(N,C,L)": ("BatchNorm1d", (4, 3, 5)),
             "BatchNorm2d": ("BatchNorm2d", (4, 3, 2, 3)),
             "SequenceBatchNorm": ("SequenceBatchNorm", (4, 5, 3))}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def assert_same_buffers(mine, theirs):
    for b in BUFFERS:
        a, r = getattr(mine, b), getattr(theirs, b)
        assert (a is None) == (r is None), b
        if r is not None:
            assert a.dtype == r.dtype, b
            close(a, r)


@pytest.mark.parametrize("config", RUNNING)
@pytest.mark.parametrize("layout", BN_SHAPES)
def test_running_statistics_and_eval_match_torch(layout, config):
    name, shape = BN_SHAPES[layout]
    mine, theirs = pair(name, (3,), RUNNING[config])
    # batches whose mean and scale drift, so the averages matter
    for step in range(4):
        x = (1 + step) * randn(*shape, seed=20 + step) + step
        close(run(mine, x), run(theirs, x))
        assert_same_buffers(mine, theirs)
    mine.eval(), theirs.eval()
    x = 2 * randn(*shape, seed=30) - 1
    close(run(mine, x), run(theirs, x))
    # eval leaves the running statistics alone
    assert_same_buffers(mine, theirs)
    y, dx, grads = forward_backward(mine, x, randn(*shape, seed=31))
    y_ref, dx_ref, grads_ref = forward_backward(theirs, x,
                                                randn(*shape, seed=31))
    close(dx, dx_ref)
    for n in grads:
        close(grads[n], grads_ref[n])


# ---- state_dict, signatures, repr -----------------------------------------
STATE_CASES = {
    "BatchNorm1d": ("BatchNorm1d", (3,), {}, (6, 3, 4)),
    "BatchNorm1d-no-tracking-no-affine": (
        "BatchNorm1d", (3,), {"track_running_stats": False, "affine": False},
        (6, 3)),
    "BatchNorm2d-bias=False": ("BatchNorm2d", (3,), {"bias": False},
                               (2, 3, 2, 2)),
    "SequenceBatchNorm": ("SequenceBatchNorm", (3,), {}, (2, 4, 3)),
    "LayerNorm": ("LayerNorm", ((2, 3),), {}, (4, 2, 3)),
    "LayerNorm-bias=False": ("LayerNorm", (3,), {"bias": False}, (4, 3)),
    "GroupNorm": ("GroupNorm", (2, 4), {}, (2, 4, 3)),
    "RMSNorm": ("RMSNorm", (3,), {}, (4, 3)),
}


@pytest.mark.parametrize("direction", ["torch->normlib", "normlib->torch"])
@pytest.mark.parametrize("case", STATE_CASES)
def test_state_dict_interchange(case, direction):
    name, args, kwargs, shape = STATE_CASES[case]
    source, _ = pair(name, args, kwargs, seed=40)     # random parameters...
    _, target = pair(name, args, kwargs, seed=50)
    if direction == "torch->normlib":
        target, source = source, target
    for step in range(3):                 # ...and trained running statistics
        run(source, 2 * randn(*shape, seed=60 + step) + step)
    state = source.state_dict()
    assert list(state) == list(target.state_dict())   # same keys, same order
    target.load_state_dict(state, strict=True)
    for m in (source, target):
        m.eval()
    x = randn(*shape, seed=70)
    close(run(target, x), run(source, x))


def signature(cls):
    return [(p.name, p.kind, p.default)
            for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize("name", TWINS)
def test_constructor_signature_matches_torch(name):
    assert signature(getattr(ours, name)) == signature(getattr(tnn, name))
    assert signature(ours.SequenceBatchNorm) == signature(tnn.BatchNorm1d)


REPR_CASES = {
    "BatchNorm1d": ("BatchNorm1d", (3,), {}),
    "BatchNorm1d-options": ("BatchNorm1d", (3,),
                            {"eps": 1e-3, "momentum": None, "affine": False,
                             "track_running_stats": False}),
    "BatchNorm2d-bias=False": ("BatchNorm2d", (5,), {"bias": False}),
    "LayerNorm": ("LayerNorm", (4,), {}),
    "LayerNorm-options": ("LayerNorm", ([2, 3],),
                          {"eps": 1e-6, "bias": False}),
    "LayerNorm-no-affine": ("LayerNorm", (4,),
                            {"elementwise_affine": False}),
    "GroupNorm": ("GroupNorm", (2, 4), {}),
    "GroupNorm-options": ("GroupNorm", (2, 4),
                          {"eps": 1e-3, "affine": False}),
    "RMSNorm": ("RMSNorm", (4,), {}),
    "RMSNorm-options": ("RMSNorm", ((2, 3),),
                        {"eps": 1e-6, "elementwise_affine": False}),
    "InstanceNorm1d": ("InstanceNorm1d", (3,), {}),
    "InstanceNorm2d-options": ("InstanceNorm2d", (3,),
                               {"eps": 1e-3, "momentum": None, "affine": True,
                                "bias": False, "track_running_stats": True}),
}
ATTRIBUTES = {"BatchNorm1d": ("num_features", "eps", "momentum", "affine",
                              "track_running_stats"),
              "LayerNorm": ("normalized_shape", "eps", "elementwise_affine"),
              "GroupNorm": ("num_groups", "num_channels", "eps", "affine"),
              "RMSNorm": ("normalized_shape", "eps", "elementwise_affine")}
for _name in ("BatchNorm2d", "InstanceNorm1d", "InstanceNorm2d"):
    ATTRIBUTES[_name] = ATTRIBUTES["BatchNorm1d"]


@pytest.mark.parametrize("case", REPR_CASES)
def test_fresh_module_looks_like_torch(case):
    """Attributes, repr, and the names, shapes, dtypes and initial values of
    the parameters and buffers."""
    name, args, kwargs = REPR_CASES[case]
    mine = getattr(ours, name)(*args, **kwargs)
    theirs = getattr(tnn, name)(*args, **kwargs)
    for attr in ATTRIBUTES[name]:
        assert getattr(mine, attr) == getattr(theirs, attr), attr
        assert type(getattr(mine, attr)) is type(getattr(theirs, attr)), attr
    assert ([n for n, _ in mine.named_parameters()]
            == [n for n, _ in theirs.named_parameters()])
    mine_state = mine.state_dict(keep_vars=True)
    theirs_state = theirs.state_dict(keep_vars=True)
    assert list(mine_state) == list(theirs_state)
    for key, ref in theirs_state.items():
        assert mine_state[key].dtype == ref.dtype, key
        assert mine_state[key].requires_grad == ref.requires_grad, key
        torch.testing.assert_close(mine_state[key], ref, rtol=0, atol=0)
    assert repr(mine) == repr(theirs)


def test_factory_kwargs_set_the_dtype():
    for m in (ours.BatchNorm1d(3, dtype=torch.float64),
              ours.LayerNorm(3, dtype=torch.float64),
              ours.GroupNorm(1, 3, dtype=torch.float64),
              ours.RMSNorm(3, dtype=torch.float64)):
        assert all(p.dtype == torch.float64 for p in m.parameters())
    bn = ours.BatchNorm2d(3, dtype=torch.float64)
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float64
    assert bn.num_batches_tracked.dtype == torch.long


# ---- masked BatchNorm: the padding is left out, as if it were never there -
# module, x shape (channels = 3), lengths per sequence: a full one, short
# ones, an all-padding one
MASKED = {
    "SequenceBatchNorm-(B,T,C)": (
        "SequenceBatchNorm", (4, 5, 3),
        [[5, 3, 1, 0], [2, 5, 0, 4], [4, 4, 4, 4]]),
    "BatchNorm1d-(N,C,L)": (
        "BatchNorm1d", (4, 3, 5),
        [[5, 3, 1, 0], [0, 1, 5, 2], [5, 5, 5, 5]]),
    "BatchNorm1d-(N,C)": (
        "BatchNorm1d", (6, 3),
        [[1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 0], [1] * 6]),
}


def channels_last(name, a):
    """Move the channel axis last, so that a[~pad_mask] is
    (real positions, channels)."""
    return a.transpose(1, 2) if name == "BatchNorm1d" and a.dim() == 3 else a


def make_pad_mask(shape, lengths, name):
    if len(shape) == 2:                        # (N, C): one flag per sample
        return torch.tensor(lengths) == 0
    steps = shape[1] if name == "SequenceBatchNorm" else shape[2]
    return pad_mask_from_lengths(lengths, steps)


@pytest.mark.parametrize("config",
                         ["momentum=0.1", "momentum=None", "bias=False"])
@pytest.mark.parametrize("layout", MASKED)
def test_masked_batch_norm_is_batch_norm_of_the_real_positions(layout, config):
    name, shape, all_lengths = MASKED[layout]
    mine = pair(name, (3,), RUNNING[config])[0]
    # plain torch BatchNorm1d on (M, C), the same parameters
    reference = pair("BatchNorm1d", (3,), RUNNING[config])[1]
    for step, lengths in enumerate(all_lengths):
        pad = make_pad_mask(shape, lengths, name)
        x = (1 + step) * randn(*shape, seed=80 + step) + step
        dy = randn(*shape, seed=90 + step)
        x = x.requires_grad_()
        y = mine(x, pad_mask=pad)
        y.backward(dy)
        # (M, C)
        real_x = channels_last(name, x.detach())[~pad].requires_grad_()
        y_ref = reference(real_x)
        y_ref.backward(channels_last(name, dy)[~pad])
        y_last = channels_last(name, y.detach())
        dx_last = channels_last(name, x.grad)
        close(y_last[~pad], y_ref.detach())
        close(dx_last[~pad], real_x.grad)
        assert (y_last[pad] == 0).all() and (dx_last[pad] == 0).all()
        for n, p in reference.named_parameters():
            close(getattr(mine, n).grad, p.grad)
            p.grad, getattr(mine, n).grad = None, None
        assert_same_buffers(mine, reference)
    mine.eval(), reference.eval()
    pad = make_pad_mask(shape, all_lengths[0], name)
    x = randn(*shape, seed=99)
    y = channels_last(name, mine(x, pad_mask=pad))
    close(y[~pad], reference(channels_last(name, x)[~pad]))
    assert (y[pad] == 0).all()


def test_all_padding_sequence_gives_no_nan():
    bn = ours.SequenceBatchNorm(3)
    x = randn(3, 4, 3, dtype=torch.float32).requires_grad_()
    pad = pad_mask_from_lengths([4, 2, 0], 4)
    for mode in ("train", "eval"):
        getattr(bn, mode)()
        y = bn(x, pad_mask=pad)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all(), mode
        assert torch.isfinite(bn.running_mean).all(), mode
        assert torch.isfinite(bn.running_var).all(), mode


@pytest.mark.parametrize("pad_value", [1e20, float("inf"), float("nan")])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_padding_values_never_reach_the_output(pad_value, mode):
    """Whatever sits in the padding (a huge fill value, inf, nan) is left
    out, not multiplied by 0."""
    bn = ours.SequenceBatchNorm(3)
    getattr(bn, mode)()
    x = randn(3, 4, 3, dtype=torch.float32)
    pad = pad_mask_from_lengths([4, 2, 1], 4)
    clean = bn(x.masked_fill(pad[..., None], 0.0), pad_mask=pad)
    bn.load_state_dict(ours.SequenceBatchNorm(3).state_dict())
    x = x.masked_fill(pad[..., None], pad_value).requires_grad_()
    y = bn(x, pad_mask=pad)
    y.sum().backward()
    torch.testing.assert_close(y, clean)
    assert torch.isfinite(x.grad).all() and (x.grad[pad] == 0).all()


# ---- bad input: torch's error type, and a message naming the argument -----
def one_value_in_eval_without_tracking(M):
    bn = M.BatchNorm1d(3, track_running_stats=False).eval()
    return bn(randn(1, 3, dtype=torch.float32))


# id: call(module namespace), error type, regex the message must match,
# torch raises too
ERRORS = {
    "BatchNorm1d-4D": (
        lambda M: M.BatchNorm1d(3)(torch.zeros(2, 3, 4, 5)),
        ValueError, r"\binput\b", True),
    "BatchNorm1d-1D": (
        lambda M: M.BatchNorm1d(3)(torch.zeros(3)),
        ValueError, r"\binput\b", True),
    "BatchNorm2d-3D": (
        lambda M: M.BatchNorm2d(3)(torch.zeros(2, 3, 4)),
        ValueError, r"\binput\b", True),
    "BatchNorm1d-one-value": (
        lambda M: M.BatchNorm1d(3)(torch.zeros(1, 3)),
        ValueError, "value per channel", True),
    "BatchNorm2d-one-value": (
        lambda M: M.BatchNorm2d(3)(torch.zeros(1, 3, 1, 1)),
        ValueError, "value per channel", True),
    "BatchNorm1d-one-value-eval-no-tracking": (
        one_value_in_eval_without_tracking,
        ValueError, "value per channel", True),
    "BatchNorm1d-channels": (
        lambda M: M.BatchNorm1d(3)(torch.zeros(4, 5)),
        RuntimeError, "num_features", True),
    "BatchNorm2d-channels": (
        lambda M: M.BatchNorm2d(3)(torch.zeros(2, 4, 2, 2)),
        RuntimeError, "num_features", True),
    "LayerNorm-shape": (
        lambda M: M.LayerNorm(4)(torch.zeros(2, 5)),
        RuntimeError, "normalized_shape", True),
    "LayerNorm-multi-dim-shape": (
        lambda M: M.LayerNorm((3, 4))(torch.zeros(4)),
        RuntimeError, "normalized_shape", True),
    "RMSNorm-shape": (
        lambda M: M.RMSNorm(4)(torch.zeros(2, 5)),
        RuntimeError, "normalized_shape", True),
    "GroupNorm-not-divisible": (
        lambda M: M.GroupNorm(3, 4),
        ValueError, "num_channels.*num_groups", True),
    "GroupNorm-channels": (
        lambda M: M.GroupNorm(2, 4)(torch.zeros(2, 6, 3)),
        RuntimeError, r"\binput\b", True),
}
for _cls, _args in (("BatchNorm1d", (3,)), ("BatchNorm2d", (3,)),
                    ("SequenceBatchNorm", (3,)), ("LayerNorm", (3,)),
                    ("GroupNorm", (1, 3)), ("RMSNorm", (3,))):
    for _eps in (0.0, -1e-5):
        ERRORS[f"{_cls}-eps={_eps}"] = (
            lambda M, c=_cls, a=_args, e=_eps: getattr(M, c)(*a, eps=e),
            ValueError, r"\beps\b", False)
ERRORS.update({
    "SequenceBatchNorm-2D": (
        lambda M: M.SequenceBatchNorm(3)(torch.zeros(4, 3)),
        ValueError, r"\binput\b", False),
    "pad_mask-shape": (
        lambda M: M.SequenceBatchNorm(3)(
            torch.zeros(2, 4, 3),
            pad_mask=torch.zeros(2, 3, dtype=torch.bool)),
        ValueError, r"\bpad_mask\b", False),
    "pad_mask-transposed": (
        lambda M: M.BatchNorm1d(3)(
            torch.zeros(2, 3, 4),
            pad_mask=torch.zeros(4, 2, dtype=torch.bool)),
        ValueError, r"\bpad_mask\b", False),
    "pad_mask-dtype": (
        lambda M: M.SequenceBatchNorm(3)(torch.zeros(2, 4, 3),
                                         pad_mask=torch.zeros(2, 4)),
        ValueError, r"\bpad_mask\b", False),
    "pad_mask-everything": (
        lambda M: M.SequenceBatchNorm(3)(
            torch.zeros(2, 4, 3),
            pad_mask=torch.ones(2, 4, dtype=torch.bool)),
        ValueError, "value per channel", False),
    "pad_mask-one-real-value": (
        lambda M: M.BatchNorm1d(3)(
            torch.zeros(2, 3, 4),
            pad_mask=pad_mask_from_lengths([0, 1], 4)),
        ValueError, "value per channel", False),
})


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_raises_like_torch(case):
    call, error, message, torch_raises = ERRORS[case]
    with pytest.raises(error, match=message):
        call(ours)
    if torch_raises:
        with pytest.raises(error):
            call(tnn)


# ---- numerical robustness -------------------------------------------------

def constant_channel():
    x = randn(6, 4, 5)
    x[:, 1] = 3.0
    return x


def constant_sample():
    x = randn(6, 4, 5)
    x[2] = -7.0
    return x


@pytest.mark.parametrize("module, x, constant", [
    (ours.BatchNorm1d(4, affine=False), constant_channel(), (slice(None), 1)),
    (ours.LayerNorm((4, 5), elementwise_affine=False), constant_sample(), 2),
    (ours.GroupNorm(2, 4, affine=False), constant_sample(), 2),
    (ours.GroupNorm(4, 4, affine=False), constant_channel(), (slice(None), 1)),
], ids=["BatchNorm1d-channel", "LayerNorm-sample", "GroupNorm-sample",
        "GroupNorm-channel"])
def test_constant_input_gives_zeros_and_finite_gradients(module, x, constant):
    x = x.requires_grad_()
    y = module.double()(x)
    y.backward(randn(*x.shape, seed=5))
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert (y[constant] == 0).all()


@pytest.mark.parametrize("module", [ours.LayerNorm(8), ours.RMSNorm(8)],
                         ids=["LayerNorm", "RMSNorm"])
def test_padding_rows_of_zeros_give_zeros_not_nan(module):
    # a batch of pure padding tokens
    x = torch.zeros(2, 3, 8).requires_grad_()
    y = module(x)
    y.backward(torch.ones_like(y))
    assert (y == 0).all() and torch.isfinite(x.grad).all()


MODULES_F32 = {"BatchNorm1d": lambda M: M.BatchNorm1d(32),
               "BatchNorm2d": lambda M: M.BatchNorm2d(8),
               "SequenceBatchNorm": lambda M: M.SequenceBatchNorm(32),
               "LayerNorm": lambda M: M.LayerNorm(32),
               "GroupNorm": lambda M: M.GroupNorm(4, 8)}
SHAPES_F32 = {"BatchNorm1d": (64, 32), "BatchNorm2d": (4, 8, 4, 4),
              "SequenceBatchNorm": (4, 16, 32), "LayerNorm": (64, 32),
              "GroupNorm": (4, 8, 4, 4)}


@pytest.mark.parametrize("offset, std, tol", [(1e4, 1.0, 1e-2),
                                              (1e4, 1e-2, 0.3),
                                              (1e6, 1.0, 0.3)])
@pytest.mark.parametrize("name", MODULES_F32)
def test_float32_large_offset_stays_close_to_float64(name, offset, std, tol):
    """No catastrophic cancellation: the float32 output stays within what
    float32 rounding of the mean allows.

    Reference: the same module in float64 on the same float32 numbers. Half
    an ulp of the offset (5e-4 at 1e4, 3e-2 at 1e6), divided by std, is the
    error any float32 mean carries; torch's own float32 kernels are no
    closer.
    """
    x = offset + std * randn(*SHAPES_F32[name], seed=100)
    x = x.float().requires_grad_()
    y = MODULES_F32[name](ours)(x)
    y.backward(torch.ones_like(y))
    reference = MODULES_F32[name](ours).double()(x.detach().double())
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert (y.double() - reference).abs().max() < tol


def test_image_rms_norm_matches_its_formula_and_gradchecks():
    norm = ours.ImageRMSNorm(4).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(4, dtype=torch.float64) + 0.5)
    x = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    rms = x.pow(2).mean((1, 2, 3), keepdim=True).add(1e-5).sqrt()
    expected = x / rms * norm.weight.reshape(1, 4, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    assert torch.autograd.gradcheck(lambda x, w: norm(x), (x, norm.weight))


def test_image_rms_norm_refuses_bad_input():
    with pytest.raises(ValueError, match="eps"):
        ours.ImageRMSNorm(4, eps=0)
    with pytest.raises(ValueError, match="4D"):
        ours.ImageRMSNorm(4)(torch.randn(2, 4, 3))


def test_ghost_batchnorm_is_per_block_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(12, 5, dtype=torch.float64)
    ghost = ours.GhostBatchNorm1d(5, 4, dtype=torch.float64)
    plain = torch.nn.BatchNorm1d(5, dtype=torch.float64)
    expected = torch.cat([
        torch.nn.functional.batch_norm(b, None, None, training=True)
        for b in x.split(4)])
    assert torch.allclose(ghost(x), expected)
    plain(x[:4])          # the first block's statistics, as rank 0's buffers
    assert torch.allclose(ghost.running_mean, plain.running_mean)
    assert torch.allclose(ghost.running_var, plain.running_var)


def test_ghost_batchnorm_refuses_what_it_cannot_split():
    ghost = ours.GhostBatchNorm1d(5, 4)
    with pytest.raises(ValueError, match="multiple of ghost_size=4"):
        ghost(torch.randn(10, 5))
    with pytest.raises(ValueError, match="ghost batches take"):
        ghost(torch.randn(8, 5, 3))
    assert ghost.eval()(torch.randn(8, 5, 3)).shape == (8, 5, 3)


def test_dyt_matches_a_hand_written_reference():
    torch.manual_seed(0)
    dyt = ours.DyT(8)
    with torch.no_grad():
        (dyt.alpha.fill_(0.7), dyt.weight.uniform_(0.5, 1.5),
         dyt.bias.uniform_(-1, 1))
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    alpha, weight, bias = (p.detach().double().requires_grad_()
                           for p in (dyt.alpha, dyt.weight, dyt.bias))
    reference = weight * torch.tanh(alpha * x) + bias
    out = dyt.double()(x)
    torch.testing.assert_close(out, reference)
    grads = torch.autograd.grad(out.sum(),
                                (x, dyt.alpha, dyt.weight, dyt.bias))
    expected = torch.autograd.grad(reference.sum(), (x, alpha, weight, bias))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    assert ours.DyT(4).alpha.item() == 0.5 and ours.DyT(4).alpha.dim() == 0
