"""Chapter 13's runs, one function per run: each builds its data and model
from its arguments and returns plain numbers, so any worker process of
`normbook.common.parallel.run_all` can run it (see `ch04_small_batches`)."""
import copy

import numpy as np
import torch
import torch.nn.functional as F

from normbook.ch13_health_and_placement.models import (
    CenteredMLP,
    DropoutMLP,
    ProbeMLP,
)
from normbook.common import data
from normbook.common.health import (
    layer_stats,
    probe,
    snapshot,
    update_ratios,
)
from normbook.common.probes import precise_bn
from normbook.common.train import (
    accuracy,
    index_stream,
    set_seed,
    train_classifier,
)
from normlib.nn import BatchNorm1d


def health_at_init(model, x, y):
    """`layer_stats` of every activation of a ProbeMLP in train mode on
    (x, y), histograms left out -> list of dicts, one per block."""
    pairs = probe(model.train(), list(model.activations), x, y)
    return [{key: value for key, value in layer_stats(a, g).items()
             if "hist" not in key} for a, g in pairs]


def _optimizer(model, name, lr):
    if name == "sgd":       # plain SGD, as makemore trains
        return torch.optim.SGD(model.parameters(), lr=lr)
    return torch.optim.Adam(model.parameters(), lr=lr)


def health_run(*, activation, norm, optimizer, lr, seed, steps=200,
               batch_size=64, depth=8, width=64):
    """Train a ProbeMLP (torch's default init) on the digits and watch it.

    Returns "log_ratio" (steps, depth + 1): log10 of each weight matrix's
    update:data ratio at every step (`health.update_ratios`; the last
    column is the head; -inf where a step left the weights unchanged),
    "train_loss" per step, "test_acc", "weight_growth" (std(W) at the
    end over std(W) at the start, per weight matrix) and "after": the
    activations' statistics on the first 512 training digits at the end
    (`health_at_init`'s numbers).  A loss that turns nan ends the run.
    """
    x, y, x_test, y_test = data.digits(seed=0)
    set_seed(seed)
    model = ProbeMLP(depth, width, norm, activation)
    start = snapshot(model)
    opt = _optimizer(model, optimizer, lr)
    stream = index_stream(len(x), batch_size, seed, None)
    log_ratio, losses = [], []
    for _ in range(steps):
        idx = next(stream)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        before = snapshot(model)
        opt.step()
        with np.errstate(divide="ignore"):
            log_ratio.append(np.log10(list(
                update_ratios(model, before).values())))
        losses.append(loss.item())
    return dict(activation=activation, norm=norm, optimizer=optimizer,
                lr=lr, seed=seed, log_ratio=np.array(log_ratio),
                train_loss=np.array(losses),
                test_acc=accuracy(model, x_test, y_test),
                weight_growth=[p.std().item() / start[name].std().item()
                               for name, p in model.named_parameters()
                               if name in start],
                after=health_at_init(model, x[:512], y[:512]))


def placement_run(*, norm, place, seed, steps=250, lr=3e-3, depth=4,
                  width=64):
    """A ReLU ProbeMLP with its norm before or after the activation,
    trained with Adam on batches of 64 -> "test_acc" and "train_loss" (the
    mean of the last 50 steps)."""
    x, y, x_test, y_test = data.digits(seed=0)
    set_seed(seed)
    model = ProbeMLP(depth, width, norm, "relu", place)
    history = train_classifier(model, x, y, steps=steps, batch_size=64,
                               lr=lr, seed=seed, x_test=x_test,
                               y_test=y_test)
    return dict(norm=norm, place=place, seed=seed,
                test_acc=history["test_acc"],
                train_loss=float(np.mean(history["train_loss"][-50:])))


def bn_input_variances(model, x, dropout_on):
    """Per BatchNorm of `model`, the variance of its input over x (one
    batch, every feature) with the model's BN in eval mode and its dropout
    on (dropout_on=True, as in training) or off (as in evaluation) ->
    list of (C,) tensors."""
    twin, seen = copy.deepcopy(model).eval(), []
    for module in twin.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train(dropout_on)
        if isinstance(module, BatchNorm1d):
            module.register_forward_pre_hook(
                lambda m, inputs: seen.append(inputs[0].var(0)))
    with torch.no_grad():
        twin(x)
    return seen


@torch.no_grad()
def predicted_shift(model, x):
    """Per dropout layer of a DropoutMLP followed by a linear layer, the
    variance that dropout adds to each unit of that linear's output in
    training: (p / (1 - p)) * sum_i W_ki^2 E[a_i^2], with a the dropout's
    input over x (eval mode) -> list of (C,) tensors.

    Shown in chapter 13, "Dropout before BatchNorm: the variance shift".
    """
    layers, extra, captured = list(model.body), [], []
    twin = copy.deepcopy(model).eval()
    for module in twin.body:
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_pre_hook(
                lambda m, inputs: captured.append(inputs[0]))
    twin(x)
    dropouts = [i for i, m in enumerate(layers)
                if isinstance(m, torch.nn.Dropout) and i + 1 < len(layers)]
    for i, a in zip(dropouts, captured):
        p, weight = layers[i].p, layers[i + 1].weight      # C_out, C_in
        extra.append(p / (1 - p) * weight.square() @ a.square().mean(0))
    return extra


def dropout_run(*, dropout, seed, p=0.5, steps=400, lr=3e-3):
    """Train a DropoutMLP (Adam, batches of 64) -> "test_acc" (eval mode,
    running statistics), "reestimated_acc" (statistics re-estimated on the
    training set with dropout off, `probes.precise_bn` at batches of 64),
    "train_var", "eval_var" and "running_var": per BN layer, the mean over
    features of its input's variance on the training set with dropout on
    and off, and of BN's running_var; "predicted_var": the variance with
    dropout off plus `predicted_shift`, for the BN layers that dropout
    feeds (the eval variance for the others)."""
    x, y, x_test, y_test = data.digits(seed=0)
    set_seed(seed)
    model = DropoutMLP(dropout, p)
    history = train_classifier(model, x, y, steps=steps, batch_size=64,
                               lr=lr, seed=seed)
    torch.manual_seed(seed)     # the dropout masks of the variance probe
    on, off = (bn_input_variances(model, x, flag) for flag in (True, False))
    bns = [m for m in model.modules() if isinstance(m, BatchNorm1d)]
    extra = iter(predicted_shift(model, x))
    fed, dropped = [], False       # per BN: does a dropout feed it?
    for module in model.body:
        if isinstance(module, torch.nn.Dropout):
            dropped = True
        elif isinstance(module, BatchNorm1d):
            fed.append(dropped)
            dropped = False
    return dict(dropout=dropout, seed=seed, p=p,
                test_acc=accuracy(model, x_test, y_test),
                reestimated_acc=accuracy(precise_bn(model, x, 64), x_test,
                                         y_test),
                train_loss=float(np.mean(history["train_loss"][-50:])),
                train_var=[v.mean().item() for v in on],
                eval_var=[v.mean().item() for v in off],
                running_var=[b.running_var.mean().item() for b in bns],
                predicted_var=[(v + next(extra)).mean().item() if f
                               else v.mean().item()
                               for v, f in zip(off, fed)])


def detached_run(*, detached, seed, steps=400, lr=0.1, batch_size=64):
    """Train a CenteredMLP with plain SGD -> per step "train_loss",
    "bias_drift" (mean over the hidden layers' units of |b_t - b_0|) and
    "weight_norm" (the hidden weight matrices' mean Frobenius norm), and the
    final "test_acc" (train-mode statistics on the whole test set: the
    model keeps no running statistics)."""
    x, y, x_test, y_test = data.digits(seed=0)
    set_seed(seed)
    model = CenteredMLP(detached)
    bias0 = [lin.bias.detach().clone() for lin in model.linears]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    stream = index_stream(len(x), batch_size, seed, None)
    losses, drift, norms = [], [], []
    for _ in range(steps):
        idx = next(stream)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        drift.append(float(np.mean([
            (lin.bias - b0).abs().mean().item()
            for lin, b0 in zip(model.linears, bias0)])))
        norms.append(float(np.mean([lin.weight.norm().item()
                                    for lin in model.linears])))
    with torch.no_grad():
        test_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    return dict(detached=detached, seed=seed, train_loss=np.array(losses),
                bias_drift=np.array(drift), weight_norm=np.array(norms),
                test_acc=test_acc)


RUNS = {"health": health_run, "placement": placement_run,
        "dropout": dropout_run, "detached": detached_run}


def run(experiment, **config):
    """RUNS[experiment](**config), its result tagged with "experiment": one
    function for `run_all`, so every run of the chapter shares one pool."""
    return dict(RUNS[experiment](**config), experiment=experiment)
