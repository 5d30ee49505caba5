"""The exercises of `normlib.check` on backward passes: BatchNorm's,
LayerNorm's and RMSNorm's.

The reader's backward gets `(dy, cache)`, the cache being the one normlib's
forward returns (`cache["xhat"]`, `cache["rstd"]` = 1 / sqrt(var + eps),
`cache["weight"]`), and returns dx and the parameters' gradients.  Each wrong
variant gets the parameters' gradients right and dx wrong, and says how in
its docstring.
"""
import numpy as np

from . import functional as F
from ._check_run import Case, Exercise

rng = np.random.default_rng(3019)    # fixed inputs, the same on every run


def normal(shape, scale=1.0, center=0.0):
    return center + scale * rng.normal(size=shape)


def with_cache(forward):
    """How a backward is called: on dy and the cache of normlib's forward."""
    def call(backward, dy, *forward_args):
        return backward(dy, forward(*forward_args)[1])
    return call


def param_grads(dy, xhat, axes):
    return (dy * xhat).sum(axes), dy.sum(axes)


def affine_cases(shapes):
    """(dy, x, gamma, beta, eps) for each (shape of x, eps)."""
    return [Case((normal(shape), normal(shape, 2.0, 1.0),
                  normal(shape[-1], 0.3, 1.0), normal(shape[-1], 0.5), eps))
            for shape, eps in shapes]


def normalize_backward(dy, cache):
    return F.normalize_backward(dy, cache)


# ---- BatchNorm, x of shape (N, C): means over the batch, axis 0 ----------

def no_mean_term(dy, cache):
    """dx without its term -mean(dxhat), the path through the mean. The
    closed form is dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat *
    xhat)); without the mean term, dx does not sum to zero over the
    batch."""
    xhat, dxhat = cache["xhat"], dy * cache["weight"]
    dx = cache["rstd"] * (dxhat - xhat * (dxhat * xhat).mean(0))
    return (dx, *param_grads(dy, xhat, 0))


def no_xhat_term(dy, cache):
    """dx without its term -xhat * mean(dxhat * xhat), the path through the
    variance. The closed form is dx = rstd * (dxhat - mean(dxhat) - xhat *
    mean(dxhat * xhat))."""
    xhat, dxhat = cache["xhat"], dy * cache["weight"]
    dx = cache["rstd"] * (dxhat - dxhat.mean(0))
    return (dx, *param_grads(dy, xhat, 0))


def statistics_as_constants(dy, cache):
    """dx = rstd * dxhat: the batch's mean and variance treated as
    constants, both of their paths left out. They depend on x, so dx also
    has the terms -mean(dxhat) and -xhat * mean(dxhat * xhat)."""
    dx = cache["rstd"] * dy * cache["weight"]
    return (dx, *param_grads(dy, cache["xhat"], 0))


def gamma_forgotten(dy, cache):
    """dy where dxhat = gamma * dy belongs: y = gamma * xhat + beta, so the
    gradient reaching xhat is scaled by gamma."""
    xhat = cache["xhat"]
    dx = cache["rstd"] * (dy - dy.mean(0) - xhat * (dy * xhat).mean(0))
    return (dx, *param_grads(dy, xhat, 0))


BATCH_NORM_BACKWARD = Exercise(
    normalize_backward,
    affine_cases([((8, 3), 1e-5), ((4, 5), 1e-3), ((32, 2), 0.1)]),
    [no_mean_term, no_xhat_term, statistics_as_constants, gamma_forgotten],
    outputs=("dx", "dgamma", "dbeta"),
    call=with_cache(F.batch_norm))


# ---- LayerNorm, x of shape (B, T, C): means over each token, axis -1 ------

def layer_norm(x, gamma, beta, eps):
    return F.layer_norm(x, x.shape[-1], gamma, beta, eps)


def no_mean_term_tokens(dy, cache):
    """dx without its term -mean(dxhat), the path through the mean. The
    closed form is dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat *
    xhat)), the means over each token's features."""
    xhat, dxhat = cache["xhat"], dy * cache["weight"]
    dx = cache["rstd"] * (dxhat - xhat * (dxhat * xhat).mean(
        -1, keepdims=True))
    return (dx, *param_grads(dy, xhat, (0, 1)))


def no_xhat_term_tokens(dy, cache):
    """dx without its term -xhat * mean(dxhat * xhat), the path through the
    variance. The closed form is dx = rstd * (dxhat - mean(dxhat) - xhat *
    mean(dxhat * xhat)), the means over each token's features."""
    xhat, dxhat = cache["xhat"], dy * cache["weight"]
    dx = cache["rstd"] * (dxhat - dxhat.mean(-1, keepdims=True))
    return (dx, *param_grads(dy, xhat, (0, 1)))


def batch_axes_means(dy, cache):
    """the means of the closed form taken over the batch and time, as in
    BatchNorm. They run over what the statistics ran over: each token's C
    features."""
    xhat, dxhat = cache["xhat"], dy * cache["weight"]
    dx = cache["rstd"] * (dxhat - dxhat.mean((0, 1))
                          - xhat * (dxhat * xhat).mean((0, 1)))
    return (dx, *param_grads(dy, xhat, (0, 1)))


LAYER_NORM_BACKWARD = Exercise(
    normalize_backward,
    affine_cases([((3, 4, 8), 1e-5), ((2, 3, 5), 1e-3), ((4, 2, 16), 0.1)]),
    [no_mean_term_tokens, no_xhat_term_tokens, batch_axes_means],
    outputs=("dx", "dgamma", "dbeta"),
    call=with_cache(layer_norm))


# ---- RMSNorm, x of shape (B, T, C), weight (C,), no bias -----------------

def rms_norm(x, weight, eps):
    return F.rms_norm(x, x.shape[-1], weight, eps)


def rms_norm_backward(dy, cache):
    return F.normalize_backward(dy, cache)[:2]


def mean_term_kept(dy, cache):
    """LayerNorm's backward, with the term -mean(dxhat). That term is the
    path through the mean, and RMSNorm subtracts none: dx = rstd * (dxhat -
    xhat * mean(dxhat * xhat))."""
    xhat, dxhat = cache["xhat"], dy * cache["weight"]
    dx = cache["rstd"] * (dxhat - dxhat.mean(-1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).sum((0, 1))


def rms_as_constant(dy, cache):
    """dx = rstd * dxhat: the root mean square treated as a constant. It
    depends on x, which adds the term -xhat * mean(dxhat * xhat)."""
    return cache["rstd"] * dy * cache["weight"], (dy * cache["xhat"]).sum(
        (0, 1))


def weight_forgotten(dy, cache):
    """dy where dxhat = weight * dy belongs: y = weight * xhat, so the
    gradient reaching xhat is scaled by the weight."""
    xhat = cache["xhat"]
    dx = cache["rstd"] * (dy - xhat * (dy * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).sum((0, 1))


RMS_NORM_BACKWARD = Exercise(
    rms_norm_backward,
    [Case((normal(shape), normal(shape, 2.0, 1.0),
           normal(shape[-1], 0.3, 1.0), eps))
     for shape, eps in (((3, 4, 8), 1e-5), ((2, 3, 5), 1e-3),
                        ((4, 2, 16), 0.1))],
    [mean_term_kept, rms_as_constant, weight_forgotten],
    outputs=("dx", "dweight"),
    call=with_cache(rms_norm))
