"""One training run of each Part II experiment, as a function of its settings, for `normlib.parallel.run_all`.

A run builds its own data and model from its arguments and seed, so any worker
process can run it, and it returns plain numbers (lists and floats), never a model.
"""
import functools
import math

import torch
import torch.nn.functional as F

from . import data
from .ensemble import train_classifier_ensemble, train_lm_ensemble
from .models import TinyCNN, TinyMLP, TinyTransformer
from .modern import stream_sizes
from .stats import batch_stat_lm_loss, precise_bn
from .train import accuracy, batch_stat_accuracy, lm_loss, set_seed, train_classifier, train_lm


@functools.lru_cache(maxsize=4)
def char_lm_data(context, test_windows=512):
    """The pydoc text as windows of context + 1 characters -> (train (N, T + 1), test (M, T + 1), vocab_size).

    The split is fixed (seed 0); `test_windows` caps the test set so evaluation stays cheap.
    """
    text = data.text_corpus()
    stoi, itos = data.char_vocab(text)
    train, test = data.split(data.char_lm_windows(text, context, stoi), 0.1, seed=0)
    return train, test[:test_windows], len(itos)


def char_lm_baselines(context):
    """Test loss (nats per character) of the unigram and the bigram model counted on the training windows.

    Counts are add-0.1 smoothed.  They are what "learned nothing beyond character
    frequencies" and "learned only the previous character" look like.
    """
    train, test, vocab = char_lm_data(context)
    unigram = torch.bincount(train[:, 1:].flatten(), minlength=vocab).double() + 0.1
    bigram = torch.full((vocab, vocab), 0.1, dtype=torch.float64)
    bigram.index_put_((train[:, :-1].flatten(), train[:, 1:].flatten()),
                      torch.ones(train[:, 1:].numel(), dtype=torch.float64), accumulate=True)
    nll = lambda probs: -probs.log().mean().item()
    return dict(unigram=nll((unigram / unigram.sum())[test[:, 1:].flatten()]),
                bigram=nll((bigram / bigram.sum(1, keepdim=True))[test[:, :-1].flatten(), test[:, 1:].flatten()]))


def causal_lm(vocab_size, context, seed, **model_args):
    """A causal TinyTransformer language model, initialized from `seed`."""
    set_seed(seed)
    return TinyTransformer(vocab_size, max_len=context, causal=True, **model_args)


def lm_run(*, seed, steps, batch_size, lr, context=16, warmup_steps=0, schedule="constant", eval_every=None,
           batch_stat_batch_size=None, **model_args):
    """Train a causal char-level LM on the pydoc text -> its history (see `train.train_lm`), numbers only.

    model_args go to TinyTransformer (d_model, n_heads, n_layers, norm, pre_ln, ...).
    A run whose loss turns nan or inf stops there; its final "test_loss" is then inf.
    batch_stat_batch_size: also score the test windows in train mode, in batches of that
    size ("batch_stat_test_loss"; BatchNorm then uses each batch's statistics).
    """
    train, test, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, **model_args)
    history = train_lm(model, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed, windows_test=test,
                       warmup_steps=warmup_steps, schedule=schedule, eval_every=eval_every)
    if batch_stat_batch_size:
        history["batch_stat_test_loss"] = batch_stat_lm_loss(model, test, batch_stat_batch_size)
    history["settings"] = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, context=context,
                               warmup_steps=warmup_steps, schedule=schedule, **model_args)
    return history


def lm_ensemble_run(*, members, steps, batch_size, context=16, schedule="constant", eval_every=None,
                    batch_stat_batch_size=None, probe=None, **model_args):
    """`lm_run` for many members at once (`normlib.ensemble`): one architecture, each member a dict
    of its own seed, lr and warmup_steps -> one history per member, as lm_run returns them.

    probe: a function (trained model, test windows) -> numbers, kept as history["probe"].
    """
    train, test, vocab = char_lm_data(context)
    models = [causal_lm(vocab, context, member["seed"], **model_args) for member in members]
    histories, ensemble = train_lm_ensemble(
        models, train, steps=steps, batch_size=batch_size, lrs=[m["lr"] for m in members],
        seeds=[m["seed"] for m in members], warmup_steps=[m.get("warmup_steps", 0) for m in members],
        schedule=schedule, windows_test=test, eval_every=eval_every)
    for index, (history, member) in enumerate(zip(histories, members)):
        if probe is not None:
            history["probe"] = probe(ensemble.member(index, models[index]), test)
        if batch_stat_batch_size:
            trained = ensemble.member(index, models[index])
            history["batch_stat_test_loss"] = batch_stat_lm_loss(trained, test, batch_stat_batch_size)
        history["settings"] = dict(member, steps=steps, batch_size=batch_size, context=context,
                                   schedule=schedule, **model_args)
    return histories


def cnn_run(*, seed, steps, batch_size, lr, norm, schedule="constant", eval_every=None):
    """Train TinyCNN(norm) on the digits (fixed split) -> its history (see `train.train_classifier`)."""
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    set_seed(seed)
    model = TinyCNN(norm)
    history = train_classifier(model, x_train, y_train, x_test=x_test, y_test=y_test, steps=steps,
                               batch_size=batch_size, lr=lr, seed=seed, schedule=schedule,
                               eval_every=eval_every)
    history["settings"] = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, norm=norm,
                               schedule=schedule)
    return history


def fc2_grad_norms(*, seed, n_layers, batches=8, batch_size=16, context=16, **model_args):
    """Xiong et al.'s measurement: the norm of the expected gradient of each block's W_FC2 at initialization.

    W_FC2 is the second weight of each block's MLP.  The gradient is averaged over
    `batches` batches first, then its Frobenius norm taken, as in their Figure 3.
    Returns a list, block 1 (next to the input) first.
    """
    train, _, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, n_layers=n_layers, **model_args)
    weights = [block.mlp[2].weight for block in model.blocks]
    totals = [torch.zeros_like(w) for w in weights]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    for batch in order[: batches * batch_size].split(batch_size):
        windows = train[batch]
        logits = model(windows[:, :-1])                                        # B, T, vocab
        grads = torch.autograd.grad(F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()), weights)
        for total, grad in zip(totals, grads):
            total += grad
    return [(total / batches).norm().item() for total in totals]


def stream_growth(*, seed, n_layers, windows=16, context=16, **model_args):
    """E||x_l||^2 / d of the residual stream entering each block (l = 0 is the embedding) and leaving the last.

    The quantity of Xiong et al.'s Lemma 2, measured on `windows` training windows at initialization.
    """
    train, _, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, n_layers=n_layers, **model_args)
    return stream_sizes(model, train[:windows])


def lm_mode_losses(*, seed, steps, batch_size, lr, context=32, scored=16, **model_args):
    """Train a causal LM, then score `scored` test windows three ways -> [eval mode, train mode, train mode alone].

    Eval mode uses BatchNorm's running statistics; train mode normalizes the scored
    windows as one batch; "alone" normalizes each window by itself (batch 1) and averages.
    """
    train, test, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, **model_args)
    train_lm(model, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    windows = test[:scored]
    return [lm_loss(model, windows), batch_stat_lm_loss(model, windows, scored),
            batch_stat_lm_loss(model, windows, 1)]


def batch_size_run(*, model, norm, batch_size, seeds, epochs, base_lr, base_batch=32):
    """Train TinyCNN or TinyMLP ("cnn" or "mlp") on the digits at one batch size, one run per seed.

    As Wu & He (2018) train across batch sizes: a fixed number of epochs, SGD with
    momentum 0.9 and the linear scaling rule lr = base_lr * batch_size / base_batch
    (here with a cosine decay to 0).  The seeds train together as one batched model
    (`normlib.ensemble`).  Returns per seed the test accuracy "ema" (eval mode, running
    statistics) and, for BatchNorm, "precise" (statistics re-estimated on the training
    set, `stats.precise_bn`) and "batch" (train mode, test batches of batch_size), and
    the mean training loss of the last two epochs, "loss_last" and "loss_before" (nan for one epoch).
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    make = {"cnn": TinyCNN, "mlp": TinyMLP}[model]
    nets = []
    for seed in seeds:
        set_seed(seed)
        nets.append(make(norm))
    steps = epochs * (len(x_train) // batch_size)
    histories, ensemble = train_classifier_ensemble(
        nets, x_train, y_train, steps=steps, batch_size=batch_size, optimizer="sgd", schedule="cosine",
        lrs=[base_lr * batch_size / base_batch] * len(seeds), seeds=list(seeds))
    results, per_epoch = [], steps // epochs
    for index, (seed, net) in enumerate(zip(seeds, nets)):
        net = ensemble.member(index, net)
        losses = histories[index]["train_loss"]
        last, before = losses[-per_epoch:], losses[-2 * per_epoch:-per_epoch]
        result = dict(model=model, norm=norm, batch_size=batch_size, seed=seed, steps=steps,
                      ema=accuracy(net, x_test, y_test), loss_last=sum(last) / per_epoch,
                      loss_before=sum(before) / per_epoch if epochs > 1 else math.nan)
        if norm == "bn":
            result["precise"] = accuracy(precise_bn(net, x_train), x_test, y_test)
            result["batch"] = batch_stat_accuracy(net, x_test, y_test, batch_size, seed)
        results.append(result)
    return results
