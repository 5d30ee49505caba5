"""Chapter 6, "Recurrent networks": the LSTM runs, one function per run.

A run builds its own data and model from its arguments, so any worker
process of `normbook.common.parallel.run_all` can run it, and returns plain
numbers (see `ch04_small_batches`).
"""
import copy
import re

import torch
import torch.nn.functional as F
from torch import nn

from normbook.common import data
from normbook.common.models import TinyMLP
from normbook.common.probes import precise_bn
from normbook.common.recurrent import (
    LSTMClassifier,
    LSTMLanguageModel,
    SiteNorm,
)
from normbook.common.train import (
    accuracy,
    batch_stat_accuracy,
    set_seed,
    train_classifier,
    train_lm,
)
from normlib.nn import BatchNorm1d


def sequential_digits(permuted=False):
    """The 8x8 digits read one pixel per step, row by row ->
    (x_train (N, 64, 1), y_train, x_test (M, 64, 1), y_test).

    permuted: every image's pixels in one fixed random order (seed 0), as
    permuted sequential MNIST scrambles its 784.
    """
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    order = (torch.randperm(64, generator=torch.Generator().manual_seed(0))
             if permuted else torch.arange(64))
    return (x_train.flatten(1)[:, order, None], y_train,
            x_test.flatten(1)[:, order, None], y_test)


def shared_statistics(model, x, batch_size=256):
    """A copy of a "bn_step" model whose statistics are shared over time:
    each site keeps one set, the plain average over every step of every
    batch of x (train mode, weights frozen), as `probes.precise_bn` averages
    over batches."""
    twin = copy.deepcopy(model)
    for site in twin.modules():
        if isinstance(site, SiteNorm):
            site.kind = "bn"
            site.stats = nn.ModuleList([BatchNorm1d(
                len(site.weight), affine=False, momentum=None)])
    return precise_bn(twin, x, batch_size)


def digit_run(*, norm, seed, steps, batch_size, lr, hidden_size=32,
              permuted=False):
    """Train an LSTMClassifier with `norm` ("none", "ln" or "bn_step") on the
    sequential digits (Adam, gradients clipped to norm 1 as Cooijmans et
    al. clip them) -> its test accuracies.

    "test_acc" is the eval-mode accuracy. A "bn_step" model trains as a
    "bn" one would (same batch statistics, same shared scale); they differ
    only in the statistics kept for eval, so one run scores them all:
    "test_acc" with the running averages per step, "population_acc" with
    statistics per step averaged over the training set (Cooijmans et al.'s
    choice, `probes.precise_bn`), "shared_acc" with one population statistic
    per site for all steps (`shared_statistics`), and "batch_acc" with each
    test batch's own statistics (train mode, batches of batch_size).
    "input_population_acc" scores the running averages with the input
    term's statistics taken from the population at every step,
    "constant_population_acc" only at the steps whose pixel is constant over
    the training set. "x_var" and "h_var" hold
    the population variance per step of the input and the recurrent term
    (mean over features), "x_shared_var" and "h_shared_var" their one shared
    value.
    """
    x_train, y_train, x_test, y_test = sequential_digits(permuted)
    set_seed(seed)
    model = LSTMClassifier(1, hidden_size, 10, norm, max_steps=64)
    history = train_classifier(model, x_train, y_train, steps=steps,
                               batch_size=batch_size, lr=lr, seed=seed,
                               x_test=x_test, y_test=y_test, clip=1.0)
    result = dict(norm=norm, seed=seed, permuted=permuted,
                  test_acc=history["test_acc"],
                  train_loss=sum(history["train_loss"][-20:]) / 20)
    if norm == "bn_step":
        population = precise_bn(model, x_train)
        shared = shared_statistics(model, x_train)
        # the steps whose pixel is the same in every training image
        constant = (x_train.std(dim=0).flatten() == 0).nonzero().flatten()
        for name, fixed in (("constant", constant.tolist()),
                            ("input", range(64))):
            mixed = copy.deepcopy(model).eval()
            for t in fixed:
                mixed.lstm.norm_x.stats[t] = population.lstm.norm_x.stats[t]
            result[f"{name}_population_acc"] = accuracy(mixed, x_test, y_test)
        result.update(
            population_acc=accuracy(population, x_test, y_test),
            shared_acc=accuracy(shared, x_test, y_test),
            batch_acc=batch_stat_accuracy(model, x_test, y_test,
                                          batch_size, seed))
        for site in ("x", "h"):
            per_step = population.lstm.get_submodule(f"norm_{site}").stats
            one = shared.lstm.get_submodule(f"norm_{site}").stats[0]
            result[f"{site}_var"] = [stats.running_var.mean().item()
                                     for stats in per_step]
            result[f"{site}_shared_var"] = one.running_var.mean().item()
    return result


def mlp_run(*, norm, seed, steps, batch_size, lr):
    """chapter 4's TinyMLP on the same digits, trained as `digit_run`
    trains the LSTM -> {"norm", "seed", "test_acc"}."""
    x_train, y_train, x_test, y_test = data.digits(seed=0)
    set_seed(seed)
    history = train_classifier(TinyMLP(norm), x_train, y_train, steps=steps,
                               batch_size=batch_size, lr=lr, seed=seed,
                               x_test=x_test, y_test=y_test, clip=1.0)
    return dict(norm=norm, seed=seed, test_acc=history["test_acc"])


def lm_windows(length, test_fraction=0.1):
    """The pydoc text as windows of length + 1 characters ->
    (train (N, length + 1), test (M, length + 1), vocab_size).

    The test windows come from the text's last tenth, so windows of any
    length share no text with training windows of any other length.
    """
    text = data.text_corpus()
    stoi, itos = data.char_vocab(text)
    cut = int(len(text) * (1 - test_fraction))
    return (data.char_lm_windows(text[:cut], length, stoi),
            data.char_lm_windows(text[cut:], length, stoi), len(itos))


@torch.no_grad()
def position_losses(model, windows, batch_size=64):
    """Eval-mode next-character loss (nats) at each position of windows
    (N, T + 1) -> a list of T means over the windows."""
    model.eval()
    total = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    for batch in windows.split(batch_size):
        logits = model(batch[:, :-1])                        # B, T, vocab
        total += F.cross_entropy(logits.transpose(1, 2), batch[:, 1:],
                                 reduction="none").sum(0)
    return (total / len(windows)).tolist()


@torch.no_grad()
def stream_gap(model, window):
    """Run one window (T + 1,) token by token with batch 1 (eval mode) and
    compare with the whole window at once -> the largest absolute
    difference of the logits."""
    model.eval()
    whole = model(window[None, :-1])[0]                      # T, vocab
    state, streamed = None, []
    for t, token in enumerate(window[:-1]):
        logits, state = model.step(token.view(1), state, t)
        streamed.append(logits[0])
    return (torch.stack(streamed) - whole).abs().max().item()


def lm_length_run(*, norm, seed, steps, batch_size, lr, train_length,
                  test_length, test_windows=None, d_model=32,
                  hidden_size=64):
    """Train an LSTMLanguageModel ("none", "ln" or "bn_step") on windows of
    train_length characters, test it on windows of test_length (the first
    test_windows of them; None for all).

    The BatchNorm model is scored with population statistics, as in
    `digit_run`: per step ("position_loss"; a step past train_length reuses
    the last step's) and shared over time ("shared_position_loss").
    Returns the eval-mode loss at each test position, the largest logit gap
    between streaming with batch 1 and the whole window ("stream_gap"), and
    how many values the model keeps beside its "weights" (parameters):
    "buffer_values", its running statistics and counters.
    """
    train, _, vocab = lm_windows(train_length)
    _, test, _ = lm_windows(test_length)
    test = test[:test_windows]
    set_seed(seed)
    model = LSTMLanguageModel(vocab, d_model, hidden_size, norm,
                              max_steps=train_length)
    train_lm(model, train, steps=steps, batch_size=batch_size, lr=lr,
             seed=seed, clip=1.0)
    result = dict(norm=norm, seed=seed,
                  weights=sum(p.numel() for p in model.parameters()),
                  buffer_values=sum(b.numel() for b in model.buffers()))
    if norm == "bn_step":
        inputs = train[:2048, :-1]
        result["shared_position_loss"] = position_losses(
            shared_statistics(model, inputs), test)
        model = precise_bn(model, inputs)
    result.update(position_loss=position_losses(model, test),
                  stream_gap=stream_gap(model, test[0]))
    return result


def sentence_lengths():
    """The words per sentence of the pydoc text (a sentence ends at '.',
    '!' or '?' followed by white space) -> a LongTensor."""
    sentences = re.split(r"[.!?]\s+", data.text_corpus())
    lengths = [len(sentence.split()) for sentence in sentences]
    return torch.tensor([n for n in lengths if n > 0])


def sequences_per_step(lengths, batch_size, batches, seed):
    """Draw `batches` random batches of sentence lengths -> (batches,
    longest) counts: how many of a batch's sequences are still running at
    each step t (length > t), the values behind BatchNorm's statistic of
    step t when padding is masked."""
    generator = torch.Generator().manual_seed(seed)
    drawn = lengths[torch.randint(len(lengths), (batches, batch_size),
                                  generator=generator)]
    steps = torch.arange(int(drawn.max()))
    return (drawn[:, :, None] > steps).sum(1)


RUNS = {"digits": digit_run, "lm": lm_length_run, "mlp": mlp_run}


def run(experiment, **settings):
    """One run of the chapter's experiments: RUNS[experiment](**settings),
    tagged with its experiment, so one pool of workers takes them all."""
    return dict(RUNS[experiment](**settings), experiment=experiment)
