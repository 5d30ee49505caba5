"""normlib.functional (NumPy, float64) vs torch and numerical gradients.

micrograd-style: every norm is computed twice, once by normlib and once by
float64 torch, forward and backward, over the shapes the book uses.  Last,
merge_moments: Chan et al.'s merge of per-part statistics.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from normlib import functional as F

# normlib must not warn (e.g. 0/0 in NumPy)
pytestmark = pytest.mark.filterwarnings("error")

EPS = 1e-5
TOL = dict(rtol=1e-10, atol=1e-12)                 # float64 vs float64 torch


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def as_torch(a):
    if a is None:
        return None
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


# ---- the norms: normlib and torch side by side ---------------------------
# Each case: id, normlib forward (x, w, b) -> (y, cache), torch forward
# (x, w, b) -> y, input shape, parameter shape, whether the norm has a bias.

def _bn(shape):
    return (lambda x, w, b: F.batch_norm(x, w, b, EPS),
            lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True,
                                          eps=EPS),
            shape, (shape[1],), True)


def _bn_channels_last(shape):
    """(B, T, C) with channel_axis=-1; torch's twin runs on the transposed
    (B, C, T)."""
    return (lambda x, w, b: F.batch_norm(x, w, b, EPS, channel_axis=-1),
            lambda x, w, b: TF.batch_norm(x.transpose(1, 2), None, None, w, b,
                                          training=True,
                                          eps=EPS).transpose(1, 2),
            shape, (shape[-1],), True)


def _ln(shape, normalized_shape):
    ns = ((normalized_shape,) if isinstance(normalized_shape, int)
          else normalized_shape)
    return (lambda x, w, b: F.layer_norm(x, normalized_shape, w, b, EPS),
            lambda x, w, b: TF.layer_norm(x, ns, w, b, EPS),
            shape, ns, True)


def _rms(shape, normalized_shape):
    ns = ((normalized_shape,) if isinstance(normalized_shape, int)
          else normalized_shape)
    return (lambda x, w, b: F.rms_norm(x, normalized_shape, w, EPS),
            lambda x, w, b: TF.rms_norm(x, ns, w, EPS),
            shape, ns, False)


def _in(shape):
    return (lambda x, w, b: F.instance_norm(x, w, b, EPS),
            lambda x, w, b: TF.instance_norm(x, None, None, w, b,
                                             use_input_stats=True, eps=EPS),
            shape, (shape[1],), True)


def _gn(shape, groups):
    return (lambda x, w, b: F.group_norm(x, groups, w, b, EPS),
            lambda x, w, b: TF.group_norm(x, groups, w, b, EPS),
            shape, (shape[1],), True)


NORMS = {
    "batch-(N,C)": _bn((8, 3)),
    "batch-C=1": _bn((6, 1)),
    "batch-N=1-(N,C,L)": _bn((1, 3, 5)),
    "batch-(N,C,L)": _bn((4, 3, 5)),
    "batch-(N,C,H,W)": _bn((2, 3, 4, 5)),
    "batch-C=1-(N,C,H,W)": _bn((3, 1, 2, 2)),
    "batch-(B,T,C)": _bn_channels_last((3, 5, 4)),
    "layer-(N,C)": _ln((5, 6), 6),
    "layer-N=1": _ln((1, 6), 6),
    "layer-C=1": _ln((4, 1), 1),
    # x.shape == normalized_shape == weight.shape
    "layer-unbatched": _ln((6,), 6),
    "layer-unbatched-multi-dim": _ln((3, 4), (3, 4)),
    "layer-(B,T,C)": _ln((2, 5, 4), 4),
    "layer-(N,C,H,W)-last-two": _ln((2, 3, 4, 5), (4, 5)),
    "layer-(N,C,H,W)-last-three": _ln((2, 3, 4, 5), (3, 4, 5)),
    "rms-(N,C)": _rms((5, 6), 6),
    "rms-N=1": _rms((1, 6), 6),
    "rms-C=1": _rms((4, 1), 1),
    "rms-unbatched": _rms((6,), 6),
    "rms-(B,T,C)": _rms((2, 5, 4), 4),
    "rms-multi-dim": _rms((2, 3, 4), (3, 4)),
    "instance-(N,C,L)": _in((3, 4, 6)),
    "instance-N=1-C=1": _in((1, 1, 7)),
    "instance-(N,C,H,W)": _in((2, 3, 4, 5)),
    "group-(N,C)": _gn((4, 6), 3),
    "group-(N,C,L)": _gn((2, 6, 5), 2),
    "group-(N,C,H,W)": _gn((2, 4, 3, 3), 2),
    "group-G=1": _gn((2, 4, 3), 1),
    "group-G=C": _gn((2, 4, 3), 4),
    "group-N=1": _gn((1, 4, 3), 2),
    "group-C=1": _gn((2, 1, 5), 1),
}
CENTERED = [k for k in NORMS if not k.startswith("rms")]
AFFINE = ["none", "weight", "bias", "both"]


def inputs(key, affine, seed=0):
    """x, weight, bias (None where absent) and an upstream gradient dy for a
    norm case."""
    _, _, shape, pshape, has_bias = NORMS[key]
    x = randn(*shape, seed=seed) * 2 + 0.5
    w = (1 + 0.5 * randn(*pshape, seed=seed + 1)
         if affine in ("weight", "both") else None)
    b = (randn(*pshape, seed=seed + 2)
         if affine in ("bias", "both") and has_bias else None)
    return x, w, b, randn(*shape, seed=seed + 3)


def torch_reference(key, x, w, b, dy):
    """y and the gradients of sum(y * dy) from float64 torch autograd."""
    xt, wt, bt = as_torch(x), as_torch(w), as_torch(b)
    if key.startswith("group") and w is None and b is not None:
        # torch 2.13's group_norm backward fails ("tensor does not have a
        # device") with a bias but no weight; a weight of ones that needs no
        # gradient is the same function.
        y = NORMS[key][1](xt, torch.ones_like(bt, requires_grad=False), bt)
    else:
        y = NORMS[key][1](xt, wt, bt)
    y.backward(torch.from_numpy(dy))

    def grad(t):
        return None if t is None else t.grad.numpy()

    return y.detach().numpy(), grad(xt), grad(wt), grad(bt)


@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("key", NORMS)
def test_forward_and_backward_match_torch(key, affine):
    x, w, b, dy = inputs(key, affine)
    y, cache = NORMS[key][0](x, w, b)
    dx, dw, db = F.normalize_backward(dy, cache)
    y_ref, dx_ref, dw_ref, db_ref = torch_reference(key, x, w, b, dy)
    np.testing.assert_allclose(y, y_ref, **TOL)
    np.testing.assert_allclose(dx, dx_ref, **TOL)
    for ours, ref in ((dw, dw_ref), (db, db_ref)):
        assert (ours is None) == (ref is None)
        if ref is not None:
            assert ours.shape == ref.shape
            np.testing.assert_allclose(ours, ref, **TOL)


@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("key", CENTERED)
def test_graph_backward_equals_compact_backward(key, affine):
    x, w, b, dy = inputs(key, affine)
    _, cache = NORMS[key][0](x, w, b)
    np.testing.assert_allclose(F.normalize_backward_graph(dy, cache),
                               F.normalize_backward(dy, cache)[0], **TOL)


@pytest.mark.parametrize("key", ["layer-unbatched", "rms-unbatched",
                                 "batch-(N,C)", "group-(N,C,H,W)"])
def test_nothing_returned_or_cached_is_shared_or_changed_later(key):
    """Regression: dweight was dy_xhat itself when no axis needed summing,
    then scaled in place (and dbias was the caller's dy itself)."""
    x, w, b, dy = inputs(key, "both")
    x_before = x.copy()
    y, cache = NORMS[key][0](x, w, b)
    cached = {k: v.copy() for k, v in cache.items()
              if isinstance(v, np.ndarray) and k != "weight"}
    grads = F.normalize_backward(dy, cache)
    # backward changes no cache entry
    assert all(np.array_equal(cache[k], v) for k, v in cached.items())
    np.testing.assert_array_equal(x, x_before)
    arrays = [y, *(g for g in grads if g is not None),
              *(cache[k] for k in cached)]
    for i, a in enumerate(arrays):
        assert not any(np.shares_memory(a, other)
                       for other in arrays[i + 1:] + [x, dy])
    # a second backward agrees
    for again, first in zip(F.normalize_backward(dy, cache), grads):
        np.testing.assert_array_equal(again, first)


# ---- numerical gradients --------------------------------------------------

def numerical_grad(f, a, h=1e-5):
    """Central differences of the scalar f() with respect to every entry of a
    (changed in place)."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        plus = f()
        a[i] = old - h
        minus = f()
        a[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b):
    return (np.linalg.norm(a - b)
            / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def check_numerical(forward, x, w, b, dy, mask=None):
    """normalize_backward against central differences of
    sum(forward(x, w, b) * dy)."""
    _, cache = forward(x, w, b)
    analytic = F.normalize_backward(dy, cache)

    def loss():
        return float((forward(x, w, b)[0] * dy).sum())

    for name, a, g in zip(("dx", "dweight", "dbias"), (x, w, b), analytic):
        if a is None:
            assert g is None, name
            continue
        err = rel_error(g, numerical_grad(loss, a))
        assert err < 1e-7, f"{name}: relative error {err:.2e}"


GRAD_NORMS = ["batch-(N,C,L)", "batch-(N,C,H,W)", "batch-(B,T,C)",
              "layer-(B,T,C)", "layer-(N,C,H,W)-last-two", "rms-(B,T,C)",
              "rms-multi-dim", "instance-(N,C,H,W)", "group-(N,C,H,W)"]


@pytest.mark.parametrize("affine", ["none", "both"])
@pytest.mark.parametrize("key", GRAD_NORMS)
def test_backward_matches_numerical_gradient(key, affine):
    x, w, b, dy = inputs(key, affine, seed=7)
    check_numerical(NORMS[key][0], x, w, b, dy)


def lengths_mask(lengths, steps):
    """(batch, steps) 0/1 mask, 1 = a real value: sequence i has lengths[i]
    real steps."""
    real = np.arange(steps)[None, :] < np.array(lengths)[:, None]
    return real.astype(np.float64)


MASKED_BN = {   # channel axis, x shape, lengths (one of them all padding)
    "(N,C,L)": (1, (4, 3, 5), [5, 3, 1, 0]),
    "(B,T,C)": (-1, (4, 5, 3), [2, 5, 0, 4]),
}


@pytest.mark.parametrize("affine", ["none", "weight", "both"])
@pytest.mark.parametrize("layout", MASKED_BN)
def test_masked_batch_norm_matches_numerical_gradient(layout, affine):
    axis, shape, lengths = MASKED_BN[layout]
    x = randn(*shape, seed=3)
    channels = shape[axis]
    w = 1 + 0.5 * randn(channels, seed=4) if affine != "none" else None
    b = randn(channels, seed=5) if affine == "both" else None
    mask = lengths_mask(lengths, shape[2] if axis == 1 else shape[1])
    check_numerical(lambda x, w, b: F.batch_norm(x, w, b, EPS, mask, axis),
                    x, w, b, randn(*shape, seed=6))


@pytest.mark.parametrize("layout", MASKED_BN)
def test_masked_batch_norm_is_batch_norm_of_the_real_positions(layout):
    axis, shape, lengths = MASKED_BN[layout]
    x, w, b, dy = (randn(*shape, seed=1), randn(shape[axis], seed=2),
                   randn(shape[axis], seed=3), randn(*shape, seed=4))
    mask = lengths_mask(lengths, shape[2] if axis == 1 else shape[1])
    y, cache = F.batch_norm(x, w, b, EPS, mask, axis)
    dx, dw, db = F.normalize_backward(dy, cache)

    def channels_last(a):
        return np.moveaxis(a, 1, -1) if axis == 1 else a    # (N, L, C)

    real = mask.astype(bool)
    # (M, C): the real positions
    y_ref, dx_ref, dw_ref, db_ref = torch_reference(
        "batch-(N,C)", channels_last(x)[real], w, b, channels_last(dy)[real])
    np.testing.assert_allclose(channels_last(y)[real], y_ref, **TOL)
    np.testing.assert_allclose(channels_last(dx)[real], dx_ref, **TOL)
    np.testing.assert_allclose(dw, dw_ref, **TOL)
    np.testing.assert_allclose(db, db_ref, **TOL)
    assert not channels_last(y)[~real].any()
    assert not channels_last(dx)[~real].any()


def test_all_padding_mask_raises_without_warning():
    with pytest.raises(ValueError, match="value per channel"):
        F.batch_norm(randn(2, 3, 4), mask=np.zeros((2, 4)))


# ---- invariances (property tests) ----------------------------------------
TINY_EPS = 1e-12   # so that eps does not blur the invariances
PROPERTY = settings(max_examples=12, derandomize=True, deadline=None,
                    database=None)
scales = st.floats(0.1, 10.0)
shifts = st.floats(-5.0, 5.0)
seeds = st.integers(0, 2**16)


@PROPERTY
@given(a=scales, b=shifts, seed=seeds)
def test_layer_norm_ignores_scale_and_shift_of_one_sample(a, b, seed):
    x = randn(4, 8, seed=seed)
    moved = x.copy()
    moved[2] = a * moved[2] + b
    np.testing.assert_allclose(F.layer_norm(moved, 8, eps=TINY_EPS)[0],
                               F.layer_norm(x, 8, eps=TINY_EPS)[0],
                               rtol=1e-8, atol=1e-8)


@PROPERTY
@given(a=scales, b=st.one_of(st.floats(-5.0, -0.5), st.floats(0.5, 5.0)),
       seed=seeds)
def test_rms_norm_ignores_scale_but_not_shift(a, b, seed):
    x = randn(4, 8, seed=seed)
    y = F.rms_norm(x, 8, eps=TINY_EPS)[0]
    np.testing.assert_allclose(F.rms_norm(a * x, 8, eps=TINY_EPS)[0], y,
                               rtol=1e-8, atol=1e-8)
    assert np.abs(F.rms_norm(x + b, 8, eps=TINY_EPS)[0] - y).max() > 1e-2


@PROPERTY
@given(a=scales, b=shifts, seed=seeds)
def test_batch_norm_ignores_scale_and_shift_of_one_feature(a, b, seed):
    x = randn(16, 5, seed=seed)
    moved = x.copy()
    moved[:, 3] = a * moved[:, 3] + b
    np.testing.assert_allclose(F.batch_norm(moved, eps=TINY_EPS)[0],
                               F.batch_norm(x, eps=TINY_EPS)[0],
                               rtol=1e-8, atol=1e-8)


# ---- bad input: a ValueError that names the argument -----------------------
x4 = randn(2, 4, 3)
BAD_CALLS = {
    "normalize-eps=0": (lambda: F.normalize(x4, (1,), eps=0), "eps"),
    "batch-eps=0": (lambda: F.batch_norm(x4, eps=0.0), "eps"),
    "batch-eps<0": (lambda: F.batch_norm(x4, eps=-1e-5), "eps"),
    "layer-eps=0": (lambda: F.layer_norm(x4, 3, eps=0), "eps"),
    "rms-eps<0": (lambda: F.rms_norm(x4, 3, eps=-1.0), "eps"),
    "instance-eps=0": (lambda: F.instance_norm(x4, eps=0), "eps"),
    "group-eps=0": (lambda: F.group_norm(x4, 2, eps=0), "eps"),
    "batch-weight-size": (lambda: F.batch_norm(x4, np.ones(3)), "weight"),
    "batch-bias-size": (lambda: F.batch_norm(x4, np.ones(4), np.zeros(3)),
                        "bias"),
    "batch-weight-2d": (lambda: F.batch_norm(x4, np.ones((4, 1))), "weight"),
    "instance-weight-size": (lambda: F.instance_norm(x4, np.ones(5)),
                             "weight"),
    "instance-bias-size": (lambda: F.instance_norm(x4, None, np.zeros(5)),
                           "bias"),
    "group-weight-size": (lambda: F.group_norm(x4, 2, np.ones(3)), "weight"),
    "group-bias-size": (lambda: F.group_norm(x4, 2, np.ones(4), np.zeros(3)),
                        "bias"),
    "layer-weight-shape": (lambda: F.layer_norm(x4, 3, np.ones(4)), "weight"),
    "layer-bias-shape": (lambda: F.layer_norm(x4, 3, None, np.ones(4)),
                         "bias"),
    "rms-weight-shape": (lambda: F.rms_norm(x4, 3, np.ones(2)), "weight"),
    "layer-shape": (lambda: F.layer_norm(x4, 4), "normalized_shape"),
    "layer-multi-dim-shape": (lambda: F.layer_norm(x4, (3, 3)),
                              "normalized_shape"),
    "group-not-divisible": (lambda: F.group_norm(x4, 3), "num_groups"),
    "batch-mask-shape": (lambda: F.batch_norm(x4, mask=np.ones((2, 4))),
                         "mask"),
    "batch-1-value-per-channel": (lambda: F.batch_norm(randn(1, 4)),
                                  "value per channel"),
    "batch-1-real-value-per-channel": (
        lambda: F.batch_norm(x4, mask=lengths_mask([1, 0], 3)),
        "value per channel"),
    "instance-no-spatial-axis": (lambda: F.instance_norm(randn(2, 4)), "x"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_raises_value_error_naming_the_argument(case):
    call, name = BAD_CALLS[case]
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


# ---- numerical robustness --------------------------------------------------

def test_constant_channel_and_row_give_zeros():
    x = randn(6, 4)
    x[:, 1] = 3.0                                   # a constant channel
    y, cache = F.batch_norm(x, np.full(4, 2.0), np.arange(4.0))
    dx = F.normalize_backward(np.ones_like(x), cache)[0]
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    # zero before the affine map, then bias
    np.testing.assert_array_equal(y[:, 1], 1.0)
    x[2] = -7.0                                     # a constant row
    for y, _ in (F.layer_norm(x, 4), F.layer_norm(np.zeros((3, 4)), 4),
                 F.group_norm(x, 1)):
        assert np.isfinite(y).all()
    np.testing.assert_array_equal(F.layer_norm(x, 4)[0][2], 0.0)
    np.testing.assert_array_equal(F.rms_norm(np.zeros((3, 4)), 4)[0], 0.0)


@pytest.mark.parametrize("offset, std, tol", [(1e4, 1.0, 1e-2),
                                              (1e4, 1e-2, 0.3),
                                              (1e6, 1.0, 0.3)])
def test_float32_large_offset_stays_close_to_float64(offset, std, tol):
    """Two-pass statistics: no cancellation, so float32 stays near float64
    of the same float32 numbers.

    The float32 mean itself is off by up to half an ulp of the offset
    (1e4: 5e-4, 1e6: 3e-2), which is what remains after normalizing by std;
    torch's own float32 kernels have the same error.
    """
    x32 = (offset + std * randn(64, 32, seed=11)).astype(np.float32)
    x64 = x32.astype(np.float64)
    for norm in (F.batch_norm, lambda x: F.layer_norm(x, 32)):
        y32, y64 = norm(x32)[0], norm(x64)[0]
        assert y32.dtype == np.float32 and np.isfinite(y32).all()
        assert np.abs(y32 - y64).max() < tol


# ---- merge_moments ---------------------------------------------------------

def test_chan_merge_is_stable_where_the_sum_of_squares_is_not():
    torch.manual_seed(0)
    # float32, large offset
    parts = [1e4 + torch.randn(n, 2) for n in (7, 1, 12, 30)]
    whole = torch.cat(parts).double()
    counts = torch.tensor([float(len(p)) for p in parts])
    means = torch.stack([p.mean(0) for p in parts])
    m2s = torch.stack([((p - p.mean(0)) ** 2).sum(0) for p in parts])
    count, mean, m2 = F.merge_moments(counts, means, m2s)
    true_var = whole.var(0, unbiased=False)
    naive = sum((p ** 2).sum(0) for p in parts) / count - mean ** 2
    chan_error = ((m2 / count).double() - true_var).abs().max()
    assert int(count) == len(whole)
    assert chan_error < 1e-3 * true_var.max()
    assert (naive.double() - true_var).abs().max() > 10 * chan_error
