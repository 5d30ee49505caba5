"""The character-level language model task of chapters 7, 8 and 10.

The pydoc text as windows (`char_lm_data`), its unigram and bigram
baselines, a causal TinyTransformer, and one training run (`lm_run`) or many
runs of one architecture at once (`lm_ensemble_run`). A run builds its own
data and model from its arguments and seed, so any worker process can run
it, and it returns plain numbers (lists and floats), never a model.
"""
import functools

import torch

from normbook.common import data
from normbook.common.ensemble import train_lm_ensemble
from normbook.common.probes import batch_stat_lm_loss
from normbook.common.train import set_seed, train_lm
from normbook.common.transformer import TinyTransformer


@functools.lru_cache(maxsize=4)
def char_lm_data(context, test_windows=512):
    """The pydoc text as windows of context + 1 characters ->
    (train (N, T + 1), test (M, T + 1), vocab_size).

    The split is fixed (seed 0); `test_windows` caps the test set so
    evaluation stays cheap.
    """
    text = data.text_corpus()
    stoi, itos = data.char_vocab(text)
    train, test = data.split(data.char_lm_windows(text, context, stoi), 0.1,
                             seed=0)
    return train, test[:test_windows], len(itos)


def char_lm_baselines(context):
    """Test loss (nats per character) of the unigram and the bigram model
    counted on the training windows.

    Counts are add-0.1 smoothed.  They are what "learned nothing beyond
    character frequencies" and "learned only the previous character" look
    like.
    """
    train, test, vocab = char_lm_data(context)
    unigram = torch.bincount(train[:, 1:].flatten(),
                             minlength=vocab).double() + 0.1
    bigram = torch.full((vocab, vocab), 0.1, dtype=torch.float64)
    bigram.index_put_((train[:, :-1].flatten(), train[:, 1:].flatten()),
                      torch.ones(train[:, 1:].numel(), dtype=torch.float64),
                      accumulate=True)

    def nll(probs):
        return -probs.log().mean().item()

    return dict(
        unigram=nll((unigram / unigram.sum())[test[:, 1:].flatten()]),
        bigram=nll((bigram / bigram.sum(1, keepdim=True))[
            test[:, :-1].flatten(), test[:, 1:].flatten()]))


def causal_lm(vocab_size, context, seed, **model_args):
    """A causal TinyTransformer language model, initialized from `seed`."""
    set_seed(seed)
    return TinyTransformer(vocab_size, max_len=context, causal=True,
                           **model_args)


def lm_run(*, seed, steps, batch_size, lr, context=16, warmup_steps=0,
           schedule="constant", eval_every=None, batch_stat_batch_size=None,
           **model_args):
    """Train a causal char-level LM on the pydoc text -> its history (see
    `train.train_lm`), numbers only.

    model_args go to TinyTransformer (its `TransformerConfig` fields:
    d_model, n_heads, n_layers, norm, placement, ...). A run whose loss turns
    nan or inf stops there; its final "test_loss" is then inf.
    batch_stat_batch_size: also score the test windows in train mode, in
    batches of that size ("batch_stat_test_loss"; BatchNorm then uses each
    batch's statistics).
    """
    train, test, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, **model_args)
    history = train_lm(model, train, steps=steps, batch_size=batch_size,
                       lr=lr, seed=seed, windows_test=test,
                       warmup_steps=warmup_steps, schedule=schedule,
                       eval_every=eval_every)
    if batch_stat_batch_size:
        history["batch_stat_test_loss"] = batch_stat_lm_loss(
            model, test, batch_stat_batch_size)
    history["settings"] = dict(seed=seed, steps=steps, batch_size=batch_size,
                               lr=lr, context=context,
                               warmup_steps=warmup_steps, schedule=schedule,
                               **model_args)
    return history


def lm_ensemble_run(*, members, steps, batch_size, context=16,
                    schedule="constant", eval_every=None,
                    batch_stat_batch_size=None, probe=None, **model_args):
    """`lm_run` for many members at once (`normbook.common.ensemble`): one
    architecture, each member a dict of its own seed, lr and warmup_steps ->
    one history per member, as lm_run returns them.

    probe: a function (trained model, test windows) -> numbers, kept as
    history["probe"].
    """
    train, test, vocab = char_lm_data(context)
    models = [causal_lm(vocab, context, member["seed"], **model_args)
              for member in members]
    histories, ensemble = train_lm_ensemble(
        models, train, steps=steps, batch_size=batch_size,
        lrs=[m["lr"] for m in members], seeds=[m["seed"] for m in members],
        warmup_steps=[m.get("warmup_steps", 0) for m in members],
        schedule=schedule, windows_test=test, eval_every=eval_every)
    for index, (history, member) in enumerate(zip(histories, members)):
        if probe is not None:
            history["probe"] = probe(ensemble.member(index, models[index]),
                                     test)
        if batch_stat_batch_size:
            trained = ensemble.member(index, models[index])
            history["batch_stat_test_loss"] = batch_stat_lm_loss(
                trained, test, batch_stat_batch_size)
        history["settings"] = dict(member, steps=steps, batch_size=batch_size,
                                   context=context, schedule=schedule,
                                   **model_args)
    return histories


def stream_growth(*, seed, n_layers, windows=16, context=16, **model_args):
    """E||x_l||^2 / d of the residual stream entering each block (l = 0 is
    the embedding) and leaving the last.

    The quantity of Xiong et al.'s Lemma 2, measured on `windows` training
    windows at initialization.
    """
    train, _, vocab = char_lm_data(context)
    model = causal_lm(vocab, context, seed, n_layers=n_layers, **model_args)
    return stream_sizes(model, train[:windows])


@torch.no_grad()
def stream_sizes(model, windows):
    """E||x_l||^2 / d of the residual stream entering each block and leaving
    the last, on windows (N, T + 1).

    The model runs in the mode it is in (`stream_growth` measures a fresh one
    this way).
    """
    tokens = windows[:, :-1]                                     # B, T
    x = (model.tok_emb(tokens)
         + model.pos_emb(torch.arange(tokens.shape[1])))         # B, T, C
    sizes = [x.pow(2).mean().item()]
    for block in model.blocks:
        x = block(x)
        sizes.append(x.pow(2).mean().item())
    return sizes
