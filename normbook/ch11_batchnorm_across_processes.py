"""Chapter 11's experiments: SyncBatchNorm against BatchNorm on the whole
batch, ghost batches, accumulation, cost.

The functions named `*_rank` run on every rank of a
`normbook.common.distributed.LocalGroup` as fn(rank, world_size, ...); they
live here because spawned processes can only run importable functions.  The
others run in one process.
"""
import copy
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from normbook.common import data
from normbook.common.models import TinyMLP
from normbook.common.probes import precise_bn
from normbook.common.train import (
    accuracy,
    index_stream,
    set_seed,
    train_classifier,
)
from normlib.nn import GhostBatchNorm1d, SyncBatchNorm

CHANNELS = 3


# ---- SyncBatchNorm == BatchNorm on the concatenated batch -------------------

def _problem(shares, tail, seed):
    """The global batch (sum(shares), C, *tail), upstream gradient, weight and
    bias, in float64."""
    g = torch.Generator().manual_seed(seed)
    shape = (sum(shares), CHANNELS, *tail)
    # an offset: E[x^2]-E[x]^2 would lose digits
    x = 3 * torch.randn(shape, generator=g, dtype=torch.float64) + 5
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    weight = torch.rand(CHANNELS, generator=g, dtype=torch.float64) + 0.5
    bias = torch.randn(CHANNELS, generator=g, dtype=torch.float64)
    return x, dy, weight, bias


def _two_steps(layer, x, dy, weight, bias):
    """Two training steps on the same batch (running statistics move twice);
    the second step's tensors."""
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    for _ in range(2):
        layer.zero_grad()
        x = x.detach().requires_grad_()
        y = layer(x)
        y.backward(dy)
    return dict(y=y.detach(), dx=x.grad, dweight=layer.weight.grad,
                dbias=layer.bias.grad, running_mean=layer.running_mean,
                running_var=layer.running_var,
                num_batches_tracked=int(layer.num_batches_tracked))


def sync_step_rank(rank, world_size, shares, tail, seed):
    """On each rank: its share of the batch through a float64 SyncBatchNorm,
    two steps."""
    x, dy, weight, bias = _problem(shares, tail, seed)
    start, stop = sum(shares[:rank]), sum(shares[:rank + 1])
    layer = SyncBatchNorm(CHANNELS, dtype=torch.float64)
    result = _two_steps(layer, x[start:stop], dy[start:stop], weight, bias)
    result.update(calls=layer.collectives.calls,
                  bytes=layer.collectives.bytes)
    return result


def sync_errors(results, shares, tail, seed):
    """Max abs differences between the ranks' results and torch.nn.BatchNorm
    on the whole batch.

    Outputs and input gradients are concatenated in rank order, the ranks'
    parameter gradients summed; every rank's running statistics are compared.
    """
    x, dy, weight, bias = _problem(shares, tail, seed)
    kind = torch.nn.BatchNorm2d if x.ndim == 4 else torch.nn.BatchNorm1d
    layer = kind(CHANNELS, dtype=torch.float64)
    ref = _two_steps(layer, x, dy, weight, bias)
    cat = {key: torch.cat([r[key] for r in results]) for key in ("y", "dx")}
    summed = {key: sum(r[key] for r in results)
              for key in ("dweight", "dbias")}
    errors = {key: (value - ref[key]).abs().max().item()
              for key, value in {**cat, **summed}.items()}
    for key in ("running_mean", "running_var"):
        errors[key] = max((r[key] - ref[key]).abs().max().item()
                          for r in results)
    errors["num_batches_tracked"] = max(
        abs(r["num_batches_tracked"] - ref["num_batches_tracked"])
        for r in results)
    return errors


def one_row_in_all_rank(rank, world_size):
    """Rank 0 holds one row, the others none: one value per channel in the
    whole batch."""
    return SyncBatchNorm(CHANNELS)(torch.randn(1 if rank == 0 else 0,
                                               CHANNELS))


def collective_bytes(channels, itemsize):
    """Bytes one process hands to collectives per training step of one layer:
    (1 + 2C) + 2C values."""
    return {"forward": (1 + 2 * channels) * itemsize,
            "backward": 2 * channels * itemsize}


# ---- torch.nn.SyncBatchNorm on CPU ------------------------------------------

def torch_sync_on_cpu_rank(rank, world_size):
    """What torch's own SyncBatchNorm does on CPU tensors in a gloo group:
    train mode, then eval mode."""
    torch.manual_seed(0)
    layer = torch.nn.SyncBatchNorm(CHANNELS)
    x = torch.randn(4, CHANNELS, 5)
    try:
        layer(x)
        train = "no error"
    except Exception as error:
        train = f"{type(error).__name__}: {error}"
    layer.eval()
    plain = torch.nn.BatchNorm1d(CHANNELS).eval()
    eval_error = (layer(x) - plain(x)).abs().max().item()
    return dict(train=train, eval_max_abs_diff=eval_error)


# ---- ghost batches: per-process BatchNorm, simulated in one process ---------

def ghost_mlp(ghost_size, seed, width=128):
    """TinyMLP whose two BatchNorms are GhostBatchNorm1d(ghost_size),
    seeded."""
    set_seed(seed)
    model = TinyMLP("bn", width=width)
    for wrapper in (model.norm1, model.norm2):
        wrapper.norm = GhostBatchNorm1d(width, ghost_size)
    return model


def ghost_run(*, seed, ghost_size, steps, batch_size=32, lr=0.1):
    """Train ghost_mlp on the digits (SGD, cosine); test accuracy with precise
    statistics, final train loss."""
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    model = ghost_mlp(ghost_size, seed)
    history = train_classifier(model, x_train, y_train, steps=steps,
                               batch_size=batch_size, lr=lr, seed=seed,
                               optimizer="sgd", schedule="cosine")
    for wrapper in (model.norm1, model.norm2):
        wrapper.norm.ghost_size = None        # re-estimate with plain batches
    test_acc = accuracy(precise_bn(model, x_train), x_test, y_test)
    tail = history["train_loss"][-steps // 10:]
    return dict(seed=seed, ghost_size=ghost_size, test_acc=test_acc,
                train_loss=sum(tail) / len(tail))


# ---- gradient accumulation --------------------------------------------------

def _grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def accumulation_gap(norm, micro_batches, micro_size, seed=0):
    """Relative difference between accumulated micro-batch gradients and the
    one-batch gradient (float64).

    Shown in chapter 11, "Gradient accumulation is not a larger batch".
    """
    x_train, y_train, _, _ = data.digits(seed=0)
    x, y = (x_train[:micro_batches * micro_size].double(),
            y_train[:micro_batches * micro_size])
    set_seed(seed)
    model = TinyMLP(norm).double()
    accumulated = copy.deepcopy(model)
    F.cross_entropy(model(x), y).backward()
    for xs, ys in zip(x.split(micro_size), y.split(micro_size)):
        (F.cross_entropy(accumulated(xs), ys) / micro_batches).backward()
    big, acc = _grads(model), _grads(accumulated)
    result = dict(norm=norm,
                  rel_diff=((acc - big).norm() / big.norm()).item(),
                  batches_tracked=[int(m.num_batches_tracked)
                                   for m in (model.norm1.norm,
                                             accumulated.norm1.norm)]
                  if norm == "bn" else None)
    # the accumulated gradient is the ghost-batch gradient with
    # ghost_size = micro_size
    if norm == "bn":
        ghost = copy.deepcopy(model)
        ghost.zero_grad()
        for wrapper in (ghost.norm1, ghost.norm2):
            old = wrapper.norm
            wrapper.norm = GhostBatchNorm1d(old.num_features, micro_size,
                                            dtype=torch.float64)
            wrapper.norm.load_state_dict(old.state_dict())
        F.cross_entropy(ghost(x), y).backward()
        result["ghost_rel_diff"] = ((acc - _grads(ghost)).norm()
                                    / _grads(ghost).norm()).item()
    return result


# ---- communication and step time --------------------------------------------

def train_steps_rank(rank, world_size, steps, batch_size=32, seed=0,
                     warmup=5):
    """Data-parallel TinyMLP with SyncBatchNorm: each rank takes
    batch_size / world_size rows of each batch.

    Gradients are averaged with one all_reduce per step.  Returns the per-step
    losses (the global batch's mean loss), the seconds per step after `warmup`
    steps, and each BN layer's collective calls and bytes per step.
    """
    torch.set_num_threads(1)
    x_train, y_train, _, _ = data.digits(seed=0)
    set_seed(seed)
    model = SyncBatchNorm.convert_sync_batchnorm(TinyMLP("bn"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    stream = index_stream(len(x_train), batch_size, seed, None)
    share = batch_size // world_size
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        idx = next(stream)[rank * share:(rank + 1) * share]
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        if world_size > 1:
            flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()]
                             + [loss.detach().reshape(1)])
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for p in model.parameters():
                p.grad.copy_(flat[offset:offset + p.numel()].reshape(p.shape))
                offset += p.numel()
            loss = flat[-1]
        opt.step()
        losses.append(loss.item())
    seconds = (time.perf_counter() - start) / steps
    layers = [m for m in model.modules() if isinstance(m, SyncBatchNorm)]
    per_step = [(m.collectives.calls / (warmup + steps),
                 m.collectives.bytes / (warmup + steps)) for m in layers]
    return dict(losses=losses, seconds_per_step=seconds, per_layer=per_step,
                channels=[m.num_features for m in layers])
