"""Chapter 4, "Small batches": the batch-size sweep, one batch size per run,
and the running statistics' error split into noise and staleness.

A run builds its own data and models from its arguments, so any worker process
of `normbook.common.parallel.run_all` can run it, and returns plain numbers.
"""
import math

import numpy as np

from normbook.common import data
from normbook.common.ensemble import train_classifier_ensemble
from normbook.common.models import TinyCNN, TinyMLP
from normbook.common.probes import (
    distances,
    frozen_ema,
    precise_bn,
    running_stats,
)
from normbook.common.train import accuracy, batch_stat_accuracy, seeded


def _train(model, norm, seeds, x_train, y_train, *, steps, batch_size, lr,
           schedule):
    """TinyCNN or TinyMLP ("cnn" or "mlp") with `norm`, one per seed, trained
    together as one batched model with SGD (momentum 0.9) at peak rate `lr`;
    returns (nets, histories, ensemble)."""
    make = {"cnn": TinyCNN, "mlp": TinyMLP}[model]
    nets = seeded(lambda: make(norm), seeds)
    histories, ensemble = train_classifier_ensemble(
        nets, x_train, y_train, steps=steps, batch_size=batch_size,
        optimizer="sgd", schedule=schedule, lrs=[lr] * len(seeds),
        seeds=list(seeds))
    return nets, histories, ensemble


def batch_size_run(*, model, norm, batch_size, seeds, epochs, base_lr,
                   base_batch=32):
    """Train TinyCNN or TinyMLP ("cnn" or "mlp") on the digits at one batch
    size, one run per seed.

    As Wu & He (2018) train across batch sizes: a fixed number of epochs, SGD
    with momentum 0.9 and the linear scaling rule
    lr = base_lr * batch_size / base_batch (here with a cosine decay to 0).
    The seeds train together as one batched model
    (`normbook.common.ensemble`).  Returns per seed the test accuracy "ema"
    (eval mode, running statistics) and, for BatchNorm, "precise" (statistics
    re-estimated on the training set, `normbook.common.probes.precise_bn`) and
    "batch" (train mode, test batches of batch_size), and the mean training
    loss of the last two epochs, "loss_last" and "loss_before" (nan for one
    epoch).

    Shown in chapter 4, "A pocket version of the batch-size experiment".
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    steps = epochs * (len(x_train) // batch_size)
    nets, histories, ensemble = _train(
        model, norm, seeds, x_train, y_train, steps=steps,
        batch_size=batch_size, lr=base_lr * batch_size / base_batch,
        schedule="cosine")
    results, per_epoch = [], steps // epochs
    for index, (seed, net) in enumerate(zip(seeds, nets)):
        net = ensemble.member(index, net)
        losses = histories[index]["train_loss"]
        last, before = losses[-per_epoch:], losses[-2 * per_epoch:-per_epoch]
        result = dict(model=model, norm=norm, batch_size=batch_size,
                      seed=seed, steps=steps,
                      ema=accuracy(net, x_test, y_test),
                      loss_last=sum(last) / per_epoch,
                      loss_before=(sum(before) / per_epoch if epochs > 1
                                   else math.nan))
        if norm == "bn":
            result["precise"] = accuracy(precise_bn(net, x_train), x_test,
                                         y_test)
            result["batch"] = batch_stat_accuracy(net, x_test, y_test,
                                                  batch_size, seed)
        results.append(result)
    return results


def ema_staleness_run(*, model, batch_size, seeds, epochs, base_lr, schedule,
                      replay_epochs=1, replays=4, base_batch=32):
    """How far BN's running (EMA) statistics are from the final weights'
    statistics, and how much of that is sampling noise.

    Trains TinyCNN or TinyMLP with BN as `batch_size_run` does, with the
    given schedule ("cosine": decayed to 0, as in the sweep; "constant": the
    peak rate to the end, so the weights still move).  Then, per seed and BN
    layer, against the final weights' precise statistics at the training
    batch size (`probes.precise_bn`), the distances (d_mu, d_var) of
    `probes.distances` of
    "ema": the running statistics training left, and
    "frozen": the same EMA run on for `replay_epochs` more epochs of random
    batches with the final weights frozen (`probes.frozen_ema`), averaged
    over `replays` draws of batches, with their standard deviation
    "frozen_sd".

    Shown in chapter 4, "Noise or stale weights".
    """
    x_train, y_train, _, _ = data.digits(seed=0)
    nets, _, ensemble = _train(
        model, "bn", seeds, x_train, y_train,
        steps=epochs * (len(x_train) // batch_size), batch_size=batch_size,
        lr=base_lr * batch_size / base_batch, schedule=schedule)
    results = []
    for index, (seed, net) in enumerate(zip(seeds, nets)):
        net = ensemble.member(index, net)
        precise = running_stats(precise_bn(net, x_train, batch_size))
        frozen = [running_stats(frozen_ema(net, x_train, batch_size,
                                           replay_epochs,
                                           seed=1000 * seed + replay))
                  for replay in range(replays)]
        for name, (mean, var) in running_stats(net).items():
            noise = np.array([distances(*draw[name], *precise[name])
                              for draw in frozen])      # replays, 2
            results.append(dict(
                model=model, schedule=schedule, seed=seed, layer=name,
                ema=distances(mean, var, *precise[name]),
                frozen=tuple(noise.mean(0).tolist()),
                frozen_sd=tuple(noise.std(0, ddof=1).tolist())))
    return results
