"""normbook.common.ensemble: E models trained as one, each as if alone."""
import math

import pytest
import torch

from normbook.common.charlm import (
    causal_lm,
    char_lm_data,
    lm_ensemble_run,
    lm_run,
)
from normbook.common.data import digits
from normbook.common.ensemble import (
    Ensemble,
    train_classifier_ensemble,
    train_lm_ensemble,
)
from normbook.common.models import TinyCNN, TinyMLP
from normbook.common.train import set_seed, train_classifier, train_lm

SHAPE = dict(d_model=16, n_heads=2, n_layers=2)


def test_ensemble_call_equals_each_model():
    train, _, vocab = char_lm_data(16)
    models = [causal_lm(vocab, 16, seed, **SHAPE) for seed in (0, 1, 2)]
    # each member its own batch
    tokens = train[:12, :-1].view(3, 4, 16)
    out = Ensemble(models)(tokens, training=False)
    for e, model in enumerate(models):
        torch.testing.assert_close(out[e], model.eval()(tokens[e]),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["ln", "bn", "rms", "none"])
def test_members_train_as_if_alone(norm):
    train, test, vocab = char_lm_data(16)
    lrs, seeds, warmups = [3e-3, 1e-2], [0, 1], [0, 5]
    models = [causal_lm(vocab, 16, seed, norm=norm, **SHAPE)
              for seed in seeds]
    histories, _ = train_lm_ensemble(models, train, steps=20, batch_size=8,
                                     lrs=lrs, seeds=seeds,
                                     warmup_steps=warmups,
                                     windows_test=test[:64])
    for history, lr, seed, warmup in zip(histories, lrs, seeds, warmups):
        model = causal_lm(vocab, 16, seed, norm=norm, **SHAPE)
        alone = train_lm(model, train, steps=20, batch_size=8, lr=lr,
                         seed=seed, warmup_steps=warmup,
                         windows_test=test[:64])
        torch.testing.assert_close(torch.tensor(history["train_loss"]),
                                   torch.tensor(alone["train_loss"]),
                                   rtol=1e-3, atol=1e-4)
        assert math.isclose(history["test_loss"], alone["test_loss"],
                            rel_tol=1e-3)


@pytest.mark.parametrize("model, norm", [("cnn", "bn"), ("mlp", "ln")])
def test_classifier_members_train_as_if_alone(model, norm):
    x, y, _, _ = digits(seed=0)
    make, nets = {"cnn": TinyCNN, "mlp": TinyMLP}[model], []
    for seed in (0, 1):
        set_seed(seed)
        nets.append(make(norm))
    run = dict(steps=15, batch_size=4, optimizer="sgd", schedule="cosine")
    histories, _ = train_classifier_ensemble(nets, x, y, lrs=[0.01, 0.02],
                                             seeds=[0, 1], **run)
    for history, seed, lr in zip(histories, (0, 1), (0.01, 0.02)):
        set_seed(seed)
        alone = train_classifier(make(norm), x, y, lr=lr, seed=seed, **run)
        torch.testing.assert_close(torch.tensor(history["train_loss"]),
                                   torch.tensor(alone["train_loss"]),
                                   rtol=1e-3, atol=1e-4)


def test_a_diverging_member_leaves_the_others_alone():
    train, test, vocab = char_lm_data(16)
    models = [causal_lm(vocab, 16, seed, **SHAPE) for seed in (0, 1)]
    with torch.no_grad():
        models[1].head.bias.fill_(float("nan"))
    histories, _ = train_lm_ensemble(models, train, steps=5, batch_size=8,
                                     lrs=[3e-3, 3e-3], seeds=[0, 1],
                                     windows_test=test[:64])
    alone = train_lm(causal_lm(vocab, 16, 0, **SHAPE), train, steps=5,
                     batch_size=8, lr=3e-3, seed=0)
    assert histories[1]["diverged"]
    assert histories[1]["test_loss"] == math.inf
    assert not histories[0]["diverged"]
    torch.testing.assert_close(torch.tensor(histories[0]["train_loss"]),
                               torch.tensor(alone["train_loss"]),
                               rtol=1e-3, atol=1e-4)


def test_lm_ensemble_run_matches_lm_run():
    members = [dict(seed=0, lr=3e-3), dict(seed=1, lr=1e-2, warmup_steps=4)]
    together = lm_ensemble_run(members=members, steps=12, batch_size=8,
                               eval_every=6, **SHAPE)
    for history, member in zip(together, members):
        alone = lm_run(steps=12, batch_size=8, eval_every=6, **member,
                       **SHAPE)
        assert history["eval_step"] == alone["eval_step"] == [5, 11]
        torch.testing.assert_close(
            torch.tensor(history["test_loss_curve"]),
            torch.tensor(alone["test_loss_curve"]), rtol=1e-3, atol=1e-4)
        assert history["settings"].items() >= member.items()


def test_member_extraction_and_batch_statistics_loss():
    members = [dict(seed=0, lr=3e-3), dict(seed=1, lr=3e-3)]
    together = lm_ensemble_run(members=members, steps=10, batch_size=8,
                               norm="bn", batch_stat_batch_size=8, **SHAPE)
    for history, member in zip(together, members):
        alone = lm_run(steps=10, batch_size=8, norm="bn",
                       batch_stat_batch_size=8, **member, **SHAPE)
        assert math.isclose(history["batch_stat_test_loss"],
                            alone["batch_stat_test_loss"], rel_tol=1e-3)
        assert math.isclose(history["test_loss"], alone["test_loss"],
                            rel_tol=1e-3)


@pytest.mark.parametrize("options", [dict(norm="dyt"), dict(qk_norm="ln"),
                                     dict(qk_norm="rms"),
                                     dict(placement="peri"),
                                     dict(placement="post")])
def test_new_options_work_in_an_ensemble(options):
    train, _, vocab = char_lm_data(16)
    models = [causal_lm(vocab, 16, seed, **SHAPE, **options)
              for seed in (0, 1)]
    tokens = train[:8, :-1].view(2, 4, 16)
    out = Ensemble(models)(tokens, training=False)
    for e, model in enumerate(models):
        torch.testing.assert_close(out[e], model.eval()(tokens[e]),
                                   rtol=1e-4, atol=1e-5)
