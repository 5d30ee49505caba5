"""Chapter 14's small-batch sweep: chapter 4's batch-size experiment for
Batch Renormalization, Weight Standardization with GroupNorm and Weight
Normalization (and BatchNorm, the control).

A run builds its own data and models from its arguments and returns plain
numbers, so any worker of `normbook.common.parallel.run_all` can run it.
"""
from normbook.ch14_weights_and_small_batches.training import (
    renorm_limits,
    train_members,
)
from normbook.common import data
from normbook.common.models import TinyCNN, TinyMLP
from normbook.common.train import accuracy, seeded
from normlib.nn import BatchRenorm1d, BatchRenorm2d

# variant -> (the models' norm, how they hold their weights)
VARIANTS = {"bn": ("bn", "plain"), "brn": ("brn", "plain"),
            "ws": ("gn", "ws"), "wn": ("none", "wn"), "gn": ("gn", "plain"),
            "ln": ("ln", "plain")}


def small_batch_run(*, model, variant, batch_size, seeds, epochs,
                    base_lr=0.1, base_batch=32):
    """Chapter 4's batch-size experiment for one model ("cnn" or "mlp"),
    variant (a key of VARIANTS) and batch size, one run per seed.

    Trained as chapter 4 trains: a fixed number of epochs, SGD with
    momentum 0.9, lr = base_lr * batch_size / base_batch with a cosine
    decay to 0.  Batch Renormalization relaxes rmax and dmax on Ioffe's
    schedule (`renorm_limits`), and its running averages move at
    momentum 0.01 * batch_size / 4: the paper's 0.01 at its minibatch of 4,
    so that they always span about 400 examples.  Returns per seed the
    eval-mode test accuracy "acc" and the mean training loss of the last
    epoch, "loss_last".
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    make = {"cnn": TinyCNN, "mlp": TinyMLP}[model]
    norm, weights = VARIANTS[variant]
    nets = seeded(lambda: make(norm, weights=weights), seeds)
    for module in (m for net in nets for m in net.modules()):
        if isinstance(module, (BatchRenorm1d, BatchRenorm2d)):
            module.momentum = 0.01 * batch_size / 4
    per_epoch = len(x_train) // batch_size
    steps = epochs * per_epoch
    ensemble, record = train_members(
        nets, x_train, y_train, steps=steps, batch_size=batch_size,
        lr=base_lr * batch_size / base_batch, seeds=list(seeds),
        momentum=0.9, schedule="cosine",
        renorm=(lambda step: renorm_limits(step, steps))
        if variant == "brn" else None)
    results = []
    for index, (seed, net) in enumerate(zip(seeds, nets)):
        net = ensemble.member(index, net)
        results.append(dict(
            model=model, variant=variant, batch_size=batch_size, seed=seed,
            steps=steps, acc=accuracy(net, x_test, y_test),
            loss_last=record["loss"][index, -per_epoch:].mean().item()))
    return results
