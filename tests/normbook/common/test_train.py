"""normbook.common.train: the seeded training loops, evaluation, schedules."""
import math

import pytest
import torch

from normbook.common.charlm import causal_lm, char_lm_data
from normbook.common.data import (
    bucket_by_length,
    char_lm_windows,
    char_vocab,
    padded_sequences,
    random_batches,
    text_corpus,
)
from normbook.common.models import TinyCNN
from normbook.common.train import (
    accuracy,
    batch_stat_accuracy,
    batch_stat_logits,
    grad_norms_per_layer,
    lm_loss,
    lr_scale,
    seeded,
    set_seed,
    train_classifier,
    train_lm,
)
from normbook.common.transformer import TinyTransformer


def test_training_is_deterministic_and_learns(digit_data):
    x_train, y_train, x_test, y_test = digit_data
    runs = []
    for _ in range(2):
        set_seed(0)
        model = TinyCNN("bn")
        runs.append(train_classifier(model, x_train, y_train, steps=60,
                                     batch_size=32, lr=3e-3, seed=0,
                                     x_test=x_test, y_test=y_test,
                                     eval_every=30))
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert runs[0]["test_acc"] == runs[1]["test_acc"]
    history = runs[0]
    assert len(history["train_loss"]) == len(history["grad_norm"]) == 60
    assert history["eval_step"] == [29, 59]
    assert (sum(history["train_loss"][-10:])
            < 0.5 * sum(history["train_loss"][:10]))
    assert history["test_acc"] > 0.8
    assert history["test_acc"] == accuracy(model, x_test, y_test)
    running_mean = model.norm1.norm.running_mean.clone()
    model.eval()
    index, logits = batch_stat_logits(model, x_test, batch_size=16)
    assert len(index) == len(logits) == len(x_test) // 16 * 16
    assert len(index.unique()) == len(index)
    assert torch.equal(model.norm1.norm.running_mean, running_mean)
    assert not model.training
    assert 0.5 < batch_stat_accuracy(model, x_test, y_test,
                                     batch_size=16) <= 1
    assert grad_norms_per_layer(model)["head.weight"] > 0


def test_batch_stat_logits_with_pad_mask_are_per_batch_train_mode_logits():
    data = padded_sequences(70, 2, 10, seed=0)
    tokens, pad_mask, labels = data["tokens"], data["pad_mask"], data["labels"]
    shape = dict(d_model=16, n_heads=2, n_layers=1, max_len=10, norm="bn",
                 num_classes=2)
    set_seed(0)
    model = TinyTransformer(16, **shape).eval()
    index, logits = batch_stat_logits(model, tokens, 16, seed=3,
                                      pad_mask=pad_mask)
    # the 4 full batches
    assert torch.equal(index, torch.cat(random_batches(70, 16, seed=3)[:4]))
    twin = TinyTransformer(16, **shape)
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = torch.cat([twin.train()(tokens[idx], pad_mask[idx])
                              for idx in index.split(16)])
    assert torch.equal(logits, expected) and not model.training
    # the copy ran, not the model
    assert torch.equal(model.blocks[0].norm1.running_mean, torch.zeros(16))
    accuracy_ = (expected.argmax(-1) == labels[index]).float().mean().item()
    assert batch_stat_accuracy(model, tokens, labels, 16, seed=3,
                               pad_mask=pad_mask) == accuracy_
    # without the mask, the pads are in BN's statistics
    unmasked = batch_stat_logits(model, tokens, 16, seed=3)[1]
    assert not torch.equal(logits, unmasked)


def test_transformer_classifier_learns():
    data = padded_sequences(256, 2, 10, seed=0)
    set_seed(0)
    model = TinyTransformer(16, d_model=16, n_heads=2, n_layers=1, max_len=10,
                            num_classes=2)
    batches = bucket_by_length(data["lengths"], 16, 0)
    history = train_classifier(model, data["tokens"], data["labels"],
                               pad_mask=data["pad_mask"], steps=40,
                               batch_size=16, lr=3e-3, seed=0,
                               batches=batches, warmup_steps=5)
    assert sum(history["train_loss"][-10:]) < sum(history["train_loss"][:10])


def test_lm_learns():
    text = text_corpus()[:20_000]
    stoi, itos = char_vocab(text)
    windows = char_lm_windows(text, 16, stoi)
    set_seed(0)
    lm = TinyTransformer(len(itos), d_model=16, n_heads=2, n_layers=1,
                         max_len=16, causal=True)
    before = lm_loss(lm, windows[:64])
    history = train_lm(lm, windows, steps=40, batch_size=16, lr=3e-3, seed=0,
                       windows_test=windows[:64], clip=1.0)
    assert history["test_loss"] < before
    assert history["test_loss"] == lm_loss(lm, windows[:64])


def test_a_diverged_run_stops_and_reports_inf():
    train, test, vocab = char_lm_data(16)
    model = causal_lm(vocab, 16, seed=0, d_model=8, n_heads=2, n_layers=1)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    history = train_lm(model, train, steps=5, batch_size=4, lr=1e-3, seed=0,
                       windows_test=test)
    assert history["diverged"] and history["test_loss"] == math.inf
    assert history["step"] == []


def test_lr_scale_schedules():
    scales = [lr_scale(step, 10, 2, "cosine") for step in range(10)]
    assert scales[0] == 0.5 and scales[1] == 1.0 and scales[2] == 1.0
    assert scales[-1] < 0.05
    assert all(a >= b for a, b in zip(scales[2:], scales[3:]))
    with pytest.raises(ValueError, match="schedule"):
        lr_scale(0, 10, 0, "linear")


def test_seeded_makes_each_seeds_model_as_set_seed_would():
    models = seeded(lambda: torch.nn.Linear(3, 2), [5, 7, 5])
    set_seed(7)
    alone = torch.nn.Linear(3, 2)
    assert torch.equal(models[1].weight, alone.weight)
    assert torch.equal(models[0].weight, models[2].weight)
    assert not torch.equal(models[0].weight, models[1].weight)
