"""Chapter 15, "Fine-tuning pitfalls": a BatchNorm CNN pretrained on the
digits 0-4, then a new head trained on 5-9 over a backbone meant to stay
frozen.

The two tasks share the book's fixed split of the digits; the new task's
labels 5-9 become 0-4.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from normbook.common import data
from normbook.common.models import TinyCNN
from normbook.common.train import accuracy, set_seed, train_classifier
from normlib.nn import BatchNorm2d, FrozenBatchNorm2d

FREEZES = ("requires_grad", "frozen_bn")


def two_tasks():
    """The digits split into an old task (0-4) and a new one (5-9, labels
    minus 5) -> {"old": (x_train, y_train, x_test, y_test), "new": (...)}."""
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    tasks = {}
    for name, low in (("old", 0), ("new", 5)):
        train = (y_train >= low) & (y_train < low + 5)
        test = (y_test >= low) & (y_test < low + 5)
        tasks[name] = (x_train[train], y_train[train] - low,
                       x_test[test], y_test[test] - low)
    return tasks


def pretrain(seed, steps=200):
    """TinyCNN("bn") with 5 outputs trained on the old task (Adam 3e-3,
    batches of 32)."""
    x_train, y_train, _, _ = two_tasks()["old"]
    set_seed(seed)
    model = TinyCNN("bn", num_classes=5)
    train_classifier(model, x_train, y_train, steps=steps, batch_size=32,
                     lr=3e-3, seed=seed)
    return model


def freeze_backbone(model, how):
    """A copy of `model` with its backbone (everything but the head)
    frozen, `how` one of FREEZES: "requires_grad" sets requires_grad=False
    on the backbone's parameters and nothing else; "frozen_bn" also
    replaces every BatchNorm2d by a FrozenBatchNorm2d.

    Shown in chapter 15, "Fine-tuning pitfalls".
    """
    if how not in FREEZES:
        raise ValueError(f"how must be one of {FREEZES}, got {how!r}")
    twin = copy.deepcopy(model)
    for name, p in twin.named_parameters():
        p.requires_grad_(name.startswith("head."))
    if how == "frozen_bn":
        FrozenBatchNorm2d.convert_frozen_batchnorm(twin)
    return twin


def train_head(model, x, y, *, steps, batch_size, lr, seed):
    """Train a new head (a fresh nn.Linear) on (x, y) with the usual loop:
    model.train() before every step, Adam on the parameters that require a
    gradient.  Returns the model."""
    torch.manual_seed(seed)
    model.head = nn.Linear(model.head.in_features, int(y.max()) + 1)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        model.train()
        batch = torch.randint(len(x), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


@torch.no_grad()
def features(model, x):
    """The backbone's eval-mode output (N, 128): everything but the
    head."""
    twin = copy.deepcopy(model).eval()
    twin.head = nn.Identity()
    return twin(x)


def running_stats(model):
    """Every BatchNorm2d's running mean and variance, concatenated."""
    return torch.cat([torch.cat([m.running_mean, m.running_var])
                      for m in model.modules()
                      if isinstance(m, (BatchNorm2d, FrozenBatchNorm2d))])


def finetune_run(*, seed, batch_sizes, steps, lr, pretrain_steps=200):
    """Pretrain on the old task, then for each freeze of FREEZES and each
    batch size train a new head on the new task -> a list of dicts with
    "how", "batch_size", "seed", "new_acc" (new head, new task),
    "old_acc" (the fine-tuned backbone with the pretrained head, old task;
    "pretrained_acc" before fine-tuning), "stats_moved" (largest change of
    a running statistic) and "features_moved" (||change|| / ||before|| of
    the backbone's features of the old test images).

    Shown in chapter 15, "Fine-tuning pitfalls".
    """
    tasks = two_tasks()
    x_new, y_new, x_new_test, y_new_test = tasks["new"]
    _, _, x_old_test, y_old_test = tasks["old"]
    model = pretrain(seed, pretrain_steps)
    before = features(model, x_old_test)
    results = []
    for how in FREEZES:
        for batch_size in batch_sizes:
            tuned = train_head(freeze_backbone(model, how), x_new, y_new,
                               steps=steps, batch_size=batch_size, lr=lr,
                               seed=seed)
            back = copy.deepcopy(tuned)
            back.head = model.head                 # the old task's head
            after = features(tuned, x_old_test)
            results.append(dict(
                how=how, batch_size=batch_size, seed=seed,
                new_acc=accuracy(tuned, x_new_test, y_new_test),
                old_acc=accuracy(back, x_old_test, y_old_test),
                pretrained_acc=accuracy(model, x_old_test, y_old_test),
                stats_moved=(running_stats(tuned)
                             - running_stats(model)).abs().max().item(),
                features_moved=((after - before).norm()
                                / before.norm()).item()))
    return results
