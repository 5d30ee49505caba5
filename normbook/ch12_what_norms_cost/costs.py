"""Chapter 12, "What norms cost": memory traffic, memory kept for backward,
BatchNorm folded away, and fine-tuning at a small batch.

`memory_bandwidth` and `PASSES` give the bound a norm cannot beat;
`count_traffic` and `saved_bytes` measure what an implementation reads, writes
and keeps; `fold_bn` is the formula that removes an eval-mode BatchNorm.
"""
import copy

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from normbook.common.data import digits
from normbook.common.models import IgnoreMask, TinyCNN
from normbook.common.timing import time_interleaved
from normbook.common.train import accuracy, set_seed, train_classifier
from normbook.common.transformer import TinyTransformer
from normlib.nn import BatchNorm1d, BatchNorm2d

# ---- memory traffic ---------------------------------------------------------


def memory_bandwidth(megabytes=256, repeats=5):
    """Bytes per second of `dst.copy_(src)` (read + write) and of `src.sum()`
    (read), best of `repeats`.

    With `megabytes` far above the caches this is the main-memory bandwidth of
    one thread; with a norm's own size it is what that working set gets.
    Returns {"copy": B/s, "sum": B/s}.
    """
    src = torch.randn(megabytes * 2 ** 20 // 4)
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()
    steps = {"copy": lambda: dst.copy_(src), "sum": lambda: src.sum()}
    best = time_interleaved(steps, repeats=repeats, warmup=1)
    return {"copy": 2 * nbytes / best["copy"][0],
            "sum": nbytes / best["sum"][0]}


# Passes over memory (reads + writes of a tensor of the input's size) of an
# ideal fused kernel, float32, training mode; derived in chapter 12.  LN,
# RMSNorm, GN: one sample's (or group's) numbers stay in cache from statistics
# to output.  BN: a channel's statistics span the whole batch, so x is read
# twice forward, and backward needs two batch-wide sums before it can write dx.
PASSES = {  # name: (forward, backward)
    # fwd: read x (sum, sum of squares); read x, write y.
    # bwd: read dy, x; read dy, x, write dx
    "BatchNorm2d": (3, 5),
    # fwd: read x, write y.  bwd: read dy, x, write dx
    "LayerNorm": (2, 3),
    # as LayerNorm: dropping the mean saves arithmetic, not a pass
    "RMSNorm": (2, 3),
    # as LayerNorm, per (sample, group)
    "GroupNorm": (2, 3),
}


def bandwidth_bound(name, x, bytes_per_second):
    """Seconds a forward + backward of norm `name` on x needs at least: passes
    x bytes / bandwidth."""
    return (sum(PASSES[name]) * x.numel() * x.element_size()
            / bytes_per_second)


def _nbytes(t):
    """Bytes a tensor really occupies (an expanded view reads its storage
    once, a slice only its part)."""
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


class _Traffic(TorchDispatchMode):
    """Adds up the bytes every aten op reads (tensor arguments) and writes
    (tensor results); views are free."""

    def __init__(self):
        super().__init__()
        self.read = self.written = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not func.is_view and func not in (torch.ops.aten.detach.default,
                                             torch.ops.aten.alias.default):
            inputs = [
                a for a in torch.utils._pytree.tree_leaves((args, kwargs))
                if torch.is_tensor(a)]
            written = [o for o in torch.utils._pytree.tree_leaves(out)
                       if torch.is_tensor(o)]
            out_arg = kwargs.get("out")   # an out= buffer is written, not read
            self.read += sum(_nbytes(a) for a in inputs if a is not out_arg)
            self.written += sum(_nbytes(o) for o in written)
        return out


def count_traffic(module, x, dy):
    """Passes over memory that `module`'s ops issue:
    {"forward": (reads, writes), "backward": (...)}.

    In units of x's size: the bytes every aten op reads and writes, divided by
    x's bytes.  A fused kernel counts its arguments once, whatever it does
    inside.

    Shown in chapter 12, "Passes over memory, and the bandwidth bound".
    """
    x = x.detach().requires_grad_()
    result = {}
    with _Traffic() as forward:
        y = module(x)
    with _Traffic() as backward:
        y.backward(dy)
    size = x.numel() * x.element_size()
    for key, mode in (("forward", forward), ("backward", backward)):
        result[key] = (mode.read / size, mode.written / size)
    return result


# ---- memory kept for backward -----------------------------------------------


def saved_bytes(module, x):
    """Bytes autograd keeps from one forward of `module` on x until the
    backward, each storage counted once.

    Returns (total bytes, list of (shape, dtype) of the kept tensors).

    Shown in chapter 12, "Memory kept for the backward pass".
    """
    x = x.detach().requires_grad_()
    kept = {}

    def pack(t):
        kept.setdefault(t.untyped_storage().data_ptr(), (t, _nbytes(t)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return (sum(n for _, n in kept.values()),
            [(tuple(t.shape), t.dtype) for t, _ in kept.values()])


# ---- BatchNorm folded into the layer before it ------------------------------

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, BatchNorm1d, BatchNorm2d)


@torch.no_grad()
def fold_bn(layer, bn):
    """One Conv2d or Linear that computes bn(layer(x)); bn in eval mode.

    With s = gamma / sqrt(running_var + eps), per output channel:
        W' = s * W,    b' = s * (b - running_mean) + beta.

    Shown in chapter 12, "BatchNorm disappears at inference".
    """
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TypeError("layer must be an nn.Conv2d or nn.Linear, "
                        f"got {type(layer).__name__}")
    if not isinstance(bn, _BATCH_NORMS):
        raise TypeError("bn must be a BatchNorm1d or BatchNorm2d, "
                        f"got {type(bn).__name__}")
    if bn.training or bn.running_mean is None:
        raise ValueError("bn must be in eval mode with running "
                         "statistics (training uses each batch's own)")
    out = layer.weight.shape[0]                 # output channels
    if bn.num_features != out:
        raise ValueError(f"bn has num_features={bn.num_features} but "
                         f"layer has {out} output channels")
    scale = torch.rsqrt(bn.running_var + bn.eps)          # s, per channel
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean if layer.bias is None else (
        layer.bias - bn.running_mean)
    bias = bias * scale + (0 if bn.bias is None else bn.bias)
    folded = copy.deepcopy(layer)
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)        # s along dim 0
    folded.weight.copy_(layer.weight * scale.reshape(shape))
    folded.bias = nn.Parameter(bias.to(layer.weight.dtype))
    return folded


def fold_tiny_cnn(model):
    """A copy of an eval-mode `normbook.common.models.TinyCNN(norm="bn")`
    whose two BatchNorms are folded into the convs."""
    folded = copy.deepcopy(model).eval()
    for conv, norm in (("conv1", "norm1"), ("conv2", "norm2")):
        setattr(folded, conv, fold_bn(getattr(folded, conv),
                                      getattr(folded, norm).norm))
        setattr(folded, norm, IgnoreMask(nn.Identity()))
    return folded


# ---- whole steps ------------------------------------------------------------


def transformer_step_times(norms=("ln", "rms", "none"), batch_size=16,
                           context=64, d_model=128, n_layers=2, repeats=15,
                           seed=0):
    """{norm: (best, median) seconds} of one forward + backward of a causal
    `TinyTransformer` LM.

    The models take turns in every round; "none" (no norm at all) tells what
    the norms cost in a step.
    """
    vocab = 64
    windows = torch.randint(vocab, (batch_size, context + 1),
                            generator=torch.Generator().manual_seed(seed))
    steps = {}
    for norm in norms:
        torch.manual_seed(seed)
        model = TinyTransformer(vocab, d_model=d_model, n_heads=4,
                                n_layers=n_layers, max_len=context, norm=norm,
                                causal=True)

        def step(model=model):
            model.zero_grad(set_to_none=True)
            logits = model(windows[:, :-1])                      # B, T, vocab
            nn.functional.cross_entropy(logits.flatten(0, 1),
                                        windows[:, 1:].flatten()).backward()
        steps[norm] = step
    return time_interleaved(steps, repeats=repeats)


def finetune_bn(seed, pretrain_steps=200, finetune_steps=100,
                finetune_size=200, batch_size=2, lr=1e-3, shift=2):
    """Pretrain a `normbook.common.models.TinyCNN(norm="bn")` on the digits at
    batch 64, then fine-tune it at `batch_size` on `finetune_size` training
    images moved by `shift` pixels (right and down, wrapping round), once with
    BatchNorm frozen (eval mode: running statistics used and left as they are)
    and once updating it (train mode).  Returns test accuracies:
    {"pretrained" (unmoved images), "shifted before", "frozen", "updated"}
    (moved images).
    """

    def moved(images):
        return torch.roll(images, shifts=(shift, shift), dims=(2, 3))
    x, y, x_test, y_test = digits()
    set_seed(seed)
    model = TinyCNN("bn")
    train_classifier(model, x, y, steps=pretrain_steps, batch_size=64,
                     lr=3e-3, seed=seed)
    subset = torch.randperm(
        len(x), generator=torch.Generator().manual_seed(seed))[:finetune_size]
    x_tune, y_tune = moved(x[subset]), y[subset]
    result = {"pretrained": accuracy(model, x_test, y_test),
              "shifted before": accuracy(model, moved(x_test), y_test)}
    for mode in ("frozen", "updated"):
        tuned = copy.deepcopy(model).train()
        if mode == "frozen":
            tuned.norm1.eval()
            tuned.norm2.eval()
        optimizer = torch.optim.Adam(tuned.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(finetune_steps):
            batch = torch.randint(len(x_tune), (batch_size,),
                                  generator=generator)
            loss = nn.functional.cross_entropy(tuned(x_tune[batch]),
                                               y_tune[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        result[mode] = accuracy(tuned, moved(x_test), y_test)
    return result
