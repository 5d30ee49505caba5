"""One seeded training and evaluation loop for every experiment in the book."""
import copy
import math
import random

import numpy as np
import torch
import torch.nn.functional as F


def set_seed(seed, threads=1):
    """Seed Python, NumPy and torch, and fix torch's thread count (results
    are bit-stable only for a fixed count)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def seeded(make, seeds):
    """One model per seed, each made by `make()` right after
    `set_seed(seed)`, so that seed k always gives the same initial weights."""
    models = []
    for seed in seeds:
        set_seed(seed)
        models.append(make())
    return models


# ---- pieces shared by the two loops -----------------------------------------

def _optimizer(model, name, lr):
    # fused: one kernel for the whole update, the fastest on tiny models
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                               foreach=True)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def index_stream(n, batch_size, seed, batches):
    """Yield index tensors forever: `batches` cycled, or shuffled epochs of
    full batches (seeded)."""
    if batches is not None:
        while True:
            yield from batches
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} "
                         "training examples")
    g = torch.Generator().manual_seed(seed)
    # drop each epoch's ragged tail: every step sees exactly batch_size
    # examples
    while True:
        yield from (torch.randperm(n, generator=g)[: n - n % batch_size]
                    .split(batch_size))


def lr_scale(step, steps, warmup_steps, schedule):
    """The learning-rate factor of `step`: a linear warm-up over
    warmup_steps, then constant or a cosine decay to 0."""
    if schedule not in ("constant", "cosine"):
        raise ValueError("schedule must be 'constant' or 'cosine', "
                         f"got {schedule!r}")
    scale = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "cosine" and step >= warmup_steps:
        scale = 0.5 * (1 + math.cos(math.pi * (step - warmup_steps)
                                    / max(1, steps - warmup_steps)))
    return scale


def _set_lr(optimizer, lr, step, steps, warmup_steps, schedule):
    for group in optimizer.param_groups:
        group["lr"] = lr * lr_scale(step, steps, warmup_steps, schedule)


def _record(history, step, loss, curve, evaluate, test):
    """Append a step's number and loss to `history`, and when `evaluate`,
    the step and test(), the test score, to history[curve]."""
    history["step"].append(step)
    history["train_loss"].append(loss.item())
    if evaluate:
        history["eval_step"].append(step)
        history[curve].append(test())


def _total_grad_norm(model):
    return torch.nn.utils.get_total_norm(
        [p.grad for p in model.parameters() if p.grad is not None]).item()


def _forward(model, x, pad_mask):
    return model(x) if pad_mask is None else model(x, pad_mask=pad_mask)


def next_token_loss(model, windows, reduction="mean"):
    """Cross-entropy of predicting windows[:, 1:] from windows[:, :-1]
    (N, T + 1), in nats."""
    logits = model(windows[:, :-1])                           # N, T, vocab
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(),
                           reduction=reduction)


def _eval_steps(steps, eval_every):
    return (set(range(eval_every - 1, steps, eval_every)) if eval_every
            else set())


# ---- evaluation -------------------------------------------------------------

@torch.no_grad()
def accuracy(model, x, y, pad_mask=None, batch_size=None):
    """Fraction of correct argmax predictions in eval mode (BatchNorm uses
    its running statistics)."""
    was_training = model.training
    model.eval()
    size = batch_size or len(x)
    correct = 0
    for start in range(0, len(x), size):
        mask = None if pad_mask is None else pad_mask[start:start + size]
        correct += (_forward(model, x[start:start + size], mask).argmax(-1)
                    == y[start:start + size]).sum().item()
    model.train(was_training)
    return correct / len(x)


@torch.no_grad()
def batch_stat_logits(model, x, batch_size, seed=0, pad_mask=None):
    """Logits in train mode, so BatchNorm normalizes with each batch's own
    statistics -> (index (M,), logits (M, classes)).

    x is cut into random full batches of batch_size (the ragged tail is left
    out; index says which rows were used); the batches are those of
    `torch.randperm(len(x))` seeded with `seed`, as `data.random_batches`
    forms them. Tokens x (N, T) come with their pad_mask (N, T).  Runs on a
    copy: the model's running statistics are left untouched.  Assumes no
    dropout.
    """
    twin = copy.deepcopy(model).train()
    order = torch.randperm(len(x),
                           generator=torch.Generator().manual_seed(seed))
    # full batches only: BN refuses a batch of one
    order = order[: len(x) - len(x) % batch_size]
    logits = [_forward(twin, x[idx],
                       None if pad_mask is None else pad_mask[idx])
              for idx in order.split(batch_size)]
    return order, torch.cat(logits)


def batch_stat_accuracy(model, x, y, batch_size, seed=0, pad_mask=None):
    """Accuracy with each batch's own BatchNorm statistics (train mode), on
    random batches of batch_size."""
    index, logits = batch_stat_logits(model, x, batch_size, seed, pad_mask)
    return (logits.argmax(-1) == y[index]).float().mean().item()


@torch.no_grad()
def lm_loss(model, windows, batch_size=None):
    """Mean next-token cross-entropy (nats) of windows (N, T + 1) in eval
    mode."""
    was_training = model.training
    model.eval()
    size = batch_size or len(windows)
    total = 0.0
    for start in range(0, len(windows), size):
        total += next_token_loss(model, windows[start:start + size],
                                 reduction="sum").item()
    model.train(was_training)
    return total / windows[:, 1:].numel()


def grad_norms_per_layer(model):
    """Parameter name -> L2 norm of its current .grad (parameters without a
    gradient are left out)."""
    return {name: p.grad.norm().item()
            for name, p in model.named_parameters() if p.grad is not None}


# ---- training loops ---------------------------------------------------------

def train_classifier(model, x, y, *, steps, batch_size, lr, seed, x_test=None,
                     y_test=None, optimizer="adam", warmup_steps=0,
                     schedule="constant", eval_every=None, batches=None,
                     pad_mask=None, pad_mask_test=None, clip=None):
    """Train with cross-entropy on (x, y); x is images (N, 1, 8, 8) or tokens
    (N, T) with pad_mask (N, T).

    schedule: "constant" or "cosine" (decay to 0 at the last step), after
    warmup_steps of linear warm-up. Returns a history dict: per step "step",
    "train_loss", "grad_norm" (before clipping to `clip`, if given); every
    eval_every steps "eval_step" and "test_acc_curve"; and the final
    eval-mode accuracy "test_acc" (None without a test set).
    """
    torch.manual_seed(seed)                        # dropout, if any
    opt = _optimizer(model, optimizer, lr)
    stream = index_stream(len(x), batch_size, seed, batches)
    evals = _eval_steps(steps, eval_every)
    history = {"step": [], "train_loss": [], "grad_norm": [], "eval_step": [],
               "test_acc_curve": []}
    model.train()
    for step in range(steps):
        idx = next(stream)
        _set_lr(opt, lr, step, steps, warmup_steps, schedule)
        mask = None if pad_mask is None else pad_mask[idx]
        loss = F.cross_entropy(_forward(model, x[idx], mask), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        history["grad_norm"].append(_total_grad_norm(model))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        _record(history, step, loss, "test_acc_curve",
                step in evals and x_test is not None,
                lambda: accuracy(model, x_test, y_test, pad_mask_test))
    history["test_acc"] = (None if x_test is None
                           else accuracy(model, x_test, y_test, pad_mask_test))
    return history


def train_lm(model, windows, *, steps, batch_size, lr, seed, windows_test=None,
             warmup_steps=0, schedule="constant", eval_every=None, clip=None):
    """Train a language model on windows (N, T + 1): predict w[:, 1:] from
    w[:, :-1], Adam.

    The learning rate warms up and decays as in `train_classifier`. Returns
    per step "step", "train_loss", "grad_norm" (before clipping); every
    eval_every steps "eval_step" and "test_loss_curve"; and the final
    eval-mode "test_loss" (None without test windows). A loss that turns nan
    or inf ends the run: "diverged" is then True and "test_loss" is inf.
    """
    torch.manual_seed(seed)
    opt = _optimizer(model, "adam", lr)
    stream = index_stream(len(windows), batch_size, seed, None)
    evals = _eval_steps(steps, eval_every)
    history = {"step": [], "train_loss": [], "grad_norm": [], "eval_step": [],
               "test_loss_curve": [], "diverged": False}
    model.train()
    for step in range(steps):
        _set_lr(opt, lr, step, steps, warmup_steps, schedule)
        # a batch of B windows
        loss = next_token_loss(model, windows[next(stream)])
        # diverged: every later step would be nan too
        if not torch.isfinite(loss):
            history["diverged"] = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        history["grad_norm"].append(_total_grad_norm(model))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        _record(history, step, loss, "test_loss_curve",
                step in evals and windows_test is not None,
                lambda: lm_loss(model, windows_test, 256))
    history["test_loss"] = None if windows_test is None else (
        float("inf") if history["diverged"]
        else lm_loss(model, windows_test, 256))
    return history
