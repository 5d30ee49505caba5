"""normlib.parallel and normlib.experiments: worker processes change only the wall time, runs are self-contained."""
import math

import pytest
import torch

from normbook.common import data

from normbook.ch04_small_batches import batch_size_run
from normbook.ch06_cnn_vs_transformer import cnn_run
from normbook.ch07_why_attention_uses_ln import fc2_grad_norms
from normbook.common.charlm import causal_lm, char_lm_baselines, char_lm_data, lm_run, stream_growth
from normbook.common.parallel import run_all
from normbook.common.train import train_lm

TINY = dict(steps=4, batch_size=4, lr=1e-3, d_model=8, n_heads=2, n_layers=1)


def test_run_all_in_workers_equals_in_process_and_keeps_order():
    configs = [dict(seed=seed, pre_ln=pre, **TINY) for seed in (0, 1) for pre in (True, False)]
    here = run_all(lm_run, configs, workers=1)
    there = run_all(lm_run, configs, workers=2)
    assert all(run["settings"].items() >= config.items() for run, config in zip(there, configs))
    assert [run["train_loss"] for run in there] == [run["train_loss"] for run in here]
    assert here[0]["train_loss"] != here[2]["train_loss"]      # seeds differ, so order is tested


def test_run_all_of_nothing():
    assert run_all(lm_run, [], workers=2) == []


def test_baselines_order():
    baselines = char_lm_baselines(16)
    assert 3.0 < baselines["unigram"] < 3.5
    assert 2.0 < baselines["bigram"] < baselines["unigram"] - 0.5


def test_char_lm_data_shapes():
    train, test, vocab = char_lm_data(16)
    assert train.shape[1] == test.shape[1] == 17 and len(test) == 512
    assert int(train.max()) < vocab


def test_a_diverged_run_stops_and_reports_inf():
    train, test, vocab = char_lm_data(16)
    model = causal_lm(vocab, 16, seed=0, d_model=8, n_heads=2, n_layers=1)
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    history = train_lm(model, train, steps=5, batch_size=4, lr=1e-3, seed=0, windows_test=test)
    assert history["diverged"] and history["test_loss"] == math.inf and history["step"] == []


def test_lm_run_learns():
    history = lm_run(seed=0, **dict(TINY, steps=40, lr=1e-2, d_model=16))
    assert not history["diverged"]
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.5


@pytest.mark.parametrize("pre_ln", [True, False])
def test_fc2_grad_norms(pre_ln):
    norms = fc2_grad_norms(seed=0, n_layers=3, batches=2, d_model=8, n_heads=2, pre_ln=pre_ln)
    assert len(norms) == 3 and all(value > 0 for value in norms)
    assert norms == fc2_grad_norms(seed=0, n_layers=3, batches=2, d_model=8, n_heads=2, pre_ln=pre_ln)


def test_stream_growth_follows_the_init():
    small = stream_growth(seed=0, n_layers=4, d_model=16, n_heads=2)
    large = stream_growth(seed=0, n_layers=4, d_model=16, n_heads=2, init="fan_in")
    assert len(small) == 5 and small[0] == large[0]              # same embedding, different blocks
    assert large[-1] - large[0] > 2 * (small[-1] - small[0])


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init"):
        causal_lm(10, 8, seed=0, init="xavier")


def test_cnn_run_learns_and_cosine_schedule_ends_near_zero():
    history = cnn_run(seed=0, steps=60, batch_size=32, lr=3e-3, norm="bn", schedule="cosine")
    assert history["test_acc"] > 0.5


def test_set_lr_schedules():
    from normbook.common.train import _set_lr
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lrs = []
    for step in range(10):
        _set_lr(opt, 1.0, step, 10, 2, "cosine")
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0 and lrs[-1] < 0.05
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    with pytest.raises(ValueError, match="schedule"):
        _set_lr(opt, 1.0, 0, 10, 0, "linear")


def test_tiny_mlp_and_vector_norms():
    from normbook.common.models import TinyMLP, make_norm
    x = torch.randn(5, 1, 8, 8)
    for norm in ("bn", "ln", "gn", "rms", "none"):
        assert TinyMLP(norm)(x).shape == (5, 10)
    with pytest.raises(ValueError, match="layout"):
        make_norm("bn", 4, "volume")


def test_precise_bn_is_the_plain_average_and_leaves_the_model_alone():
    from normbook.common.models import TinyMLP
    from normbook.common.probes import precise_bn
    torch.manual_seed(0)
    model = TinyMLP("bn").train()
    for _ in range(3):
        model(torch.randn(8, 1, 8, 8) * 3 + 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 1, 8, 8)
    twin = precise_bn(model, x, batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not twin.training and twin.norm1.norm.momentum == 0.1
    with torch.no_grad():
        h = model.fc1(x.flatten(1))                              # layer 1's input: fixed weights
    means = torch.stack([part.mean(0) for part in h.split(16)]).mean(0)
    torch.testing.assert_close(twin.norm1.norm.running_mean, means)


def test_batch_size_run_reports_three_accuracies_for_bn():
    results = batch_size_run(model="mlp", norm="bn", batch_size=32, seeds=(0, 1), epochs=1, base_lr=0.1)
    assert [r["seed"] for r in results] == [0, 1] and results[0]["steps"] == 1348 // 32
    assert all({"ema", "precise", "batch"} <= r.keys() and r["ema"] > 0.5 for r in results)
    assert all(math.isnan(r["loss_before"]) for r in results)      # one epoch: no epoch before it
    other = batch_size_run(model="cnn", norm="gn", batch_size=64, seeds=(0,), epochs=2, base_lr=0.1)
    assert "precise" not in other[0]
    # the mean training loss of each of the last two epochs: the second lower than the first
    assert 0 < other[0]["loss_last"] < other[0]["loss_before"] < math.log(10) + 0.5


@pytest.mark.parametrize("model, norm", [("cnn", "bn"), ("mlp", "ln")])
def test_classifier_members_train_as_if_alone(model, norm):
    from normbook.common.ensemble import train_classifier_ensemble
    from normbook.common.models import TinyCNN, TinyMLP
    from normbook.common.train import set_seed, train_classifier
    x, y, _, _ = data.digits(seed=0)
    make, nets = {"cnn": TinyCNN, "mlp": TinyMLP}[model], []
    for seed in (0, 1):
        set_seed(seed)
        nets.append(make(norm))
    run = dict(steps=15, batch_size=4, optimizer="sgd", schedule="cosine")
    histories, _ = train_classifier_ensemble(nets, x, y, lrs=[0.01, 0.02], seeds=[0, 1], **run)
    for history, seed, lr in zip(histories, (0, 1), (0.01, 0.02)):
        set_seed(seed)
        alone = train_classifier(make(norm), x, y, lr=lr, seed=seed, **run)
        torch.testing.assert_close(torch.tensor(history["train_loss"]), torch.tensor(alone["train_loss"]),
                                   rtol=1e-3, atol=1e-4)
