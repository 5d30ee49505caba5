"""Measuring BatchNorm's batch statistics against its running statistics,
and against pure sampling noise.

Two distances per BN layer, each averaged over the C channels (features):

    d_mu  = mean_c |mu_B,c - running_mean_c| / sqrt(running_var_c)
            (in running standard deviations)
    d_var = mean_c |var_B,c / running_var_c - 1|
            (relative, no unit)

var_B is the unbiased batch variance, the convention of `running_var`.  The
yardstick `noise_floor(n)` is what both distances would be if the n values
behind a statistic were independent normal draws and the running estimates
knew the true mean and variance.
"""
import contextlib
import copy
from functools import partial

import numpy as np
import torch

from normbook.common.train import next_token_loss
from normlib.nn import BatchNorm1d, BatchNorm2d, SequenceBatchNorm

BATCHNORMS = (BatchNorm1d, BatchNorm2d, SequenceBatchNorm)


def batchnorm_layers(model):
    """Yield (name, module) for every normlib BatchNorm in model; a wrapper's
    trailing ".norm" is dropped."""
    for name, module in model.named_modules():
        if isinstance(module, BATCHNORMS):
            yield name.removesuffix(".norm"), module


def distances(batch_mean, batch_var, mean, var):
    """(d_mu, d_var) of batch statistics (..., C) against a reference (C,).

    Both are averaged over all entries.

    Shown in chapter 7, "Watching the batch statistics".
    """
    d_mu = ((batch_mean - mean).abs() / var.sqrt()).mean().item()
    d_var = (batch_var / var - 1).abs().mean().item()
    return d_mu, d_var


def noise_floor(n):
    """Expected (d_mu, d_var) from sampling alone: n independent normal
    values, known mean and variance.

    E|mu_B - mu| / sigma = sqrt(2 / (pi n)) and
    E|var_B / sigma^2 - 1| ~ 2 / sqrt(pi (n - 1)), since a centred normal's
    mean absolute value is sqrt(2 / pi) times its standard deviation.
    """
    return np.sqrt(2 / (np.pi * n)), 2 / np.sqrt(np.pi * (n - 1))


@contextlib.contextmanager
def watch_batch_stats(model):
    """In a with block, record every train-mode forward of every BN layer.

    Yields {layer name: [(d_mu, d_var, values per statistic) per forward]}.
    A forward *pre*-hook compares the batch with the running estimates
    before this batch is folded into them: the estimates eval mode would
    use.  The hooks go when the block exits.

    Shown in chapter 7, "Watching the batch statistics".
    """
    record, handles = {}, []

    def hook(name, module, inputs):
        if module.training:
            x = inputs[0].detach()
            channel = module.channel_axis % x.ndim
            # every axis but the channel
            axes = tuple(a for a in range(x.ndim) if a != channel)
            d_mu, d_var = distances(x.mean(axes), x.var(axes),
                                    module.running_mean, module.running_var)
            count = x.numel() // x.shape[channel]
            record.setdefault(name, []).append((d_mu, d_var, count))

    for name, module in batchnorm_layers(model):
        handles.append(module.register_forward_pre_hook(partial(hook, name)))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def bn_inputs(model, x, batch_size):
    """Every BN layer's input for x, fed batch by batch in train mode through
    a frozen copy of model.

    Returns {layer name: tensor}, the batches concatenated along the sample
    axis (len(x), ...). The copy's running statistics move; the model and its
    weights are untouched.
    """
    twin, captured = copy.deepcopy(model).train(), {}

    def keep(name, module, inputs):
        captured.setdefault(name, []).append(inputs[0])

    for name, module in batchnorm_layers(twin):
        # the copy is dropped, hooks and all
        module.register_forward_pre_hook(partial(keep, name))
    for batch in x.split(batch_size):
        twin(batch)
    return {name: torch.cat(chunks) for name, chunks in captured.items()}


def frozen_distances(x, channel_axis, batch_size, scatter=False):
    """(d_mu, d_var) of consecutive batches of batch_size samples vs all of x.

    The reference is exact (no running estimate, nothing moves): sampling
    noise alone. scatter=True first shuffles every value over all batches
    (seeded): each batch keeps its count of values per channel but no
    longer holds whole samples. len(x) must be a multiple of batch_size.

    Shown in chapter 7, "Sampling or lag?".
    """
    channels = x.shape[channel_axis]
    values = x.movedim(channel_axis, -1).reshape(-1, channels)  # values, C
    if scatter:
        generator = torch.Generator().manual_seed(0)
        values = values[torch.randperm(len(values), generator=generator)]
    per_batch = batch_size * len(values) // len(x)
    # batches, per_batch, C
    batches = values.reshape(-1, per_batch, channels)
    return distances(batches.mean(1), batches.var(1),
                     values.mean(0), values.var(0))


@torch.no_grad()
def batch_stat_lm_loss(model, windows, batch_size):
    """Mean next-token cross-entropy (nats) of windows (N, T + 1) in train
    mode: BN uses batch statistics.

    The mean is over batches of batch_size windows.  Runs on a copy, so the
    model's running statistics are untouched.  Assumes no dropout.
    """
    twin = copy.deepcopy(model).train()
    losses = [next_token_loss(twin, w) for w in windows.split(batch_size)]
    return torch.stack(losses).mean().item()


@torch.no_grad()
def precise_bn(model, x, batch_size=256):
    """A copy of model whose BatchNorm running statistics are re-estimated on
    x ("precise BN").

    Wu & Johnson (2021): after training, replace the exponential moving
    averages with a true average over many samples of the final weights.
    Here every BN layer's statistics become the plain average (momentum=None)
    over batches of batch_size rows of x, taken in train mode with the weights
    frozen and its dropout modules (nn.Dropout and kin) off, as in
    evaluation, so that a dropout before a BN does not shift the statistics
    (chapter 13's "variance shift").  A dropout a module applies itself in
    train mode, such as the Transformer's on attention weights, stays on.
    """
    twin = copy.deepcopy(model).train()
    for module in twin.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.eval()
    layers = [layer for _, layer in batchnorm_layers(twin)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None   # a plain average over the batches below
    full = len(x) - len(x) % batch_size if len(x) >= batch_size else len(x)
    # equal batches: each counts the same
    for batch in x[:full].split(batch_size):
        twin(batch)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return twin.eval()


def running_stats(model):
    """{layer name: (running_mean, running_var)} of every BN layer, copied."""
    return {name: (layer.running_mean.clone(), layer.running_var.clone())
            for name, layer in batchnorm_layers(model)}


@torch.no_grad()
def frozen_ema(model, x, batch_size, epochs=1, seed=0):
    """A copy of model whose BN running statistics go on averaging for
    `epochs` more shuffled epochs of x in batches of batch_size, in train
    mode with the weights frozen.

    The same momentum and the same kind of batches as training, but every
    batch now seen by the final weights: after k more batches the
    statistics computed under the older weights keep a weight of
    (1 - momentum)^k, and what is left is the EMA's sampling noise without
    its staleness (Wu & Johnson 2021, section 3).  Each epoch is a seeded
    permutation cut into full batches (the ragged tail dropped), as in
    training, so the average ends at an epoch's end, as training's does:
    within an epoch no row repeats.  Assumes no dropout.

    Shown in chapter 4, "Noise or stale weights".
    """
    if not 1 <= batch_size <= len(x):
        raise ValueError(f"batch_size must be in [1, {len(x)}] (the rows of "
                         f"x), got {batch_size}")
    twin = copy.deepcopy(model).train()
    generator = torch.Generator().manual_seed(seed)
    full = len(x) - len(x) % batch_size
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)[:full]
        for index in order.split(batch_size):
            twin(x[index])
    return twin.eval()
