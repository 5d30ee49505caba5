"""normbook.common.probes: batch-vs-running distances, hooks, precise BN,
the frozen-weights EMA."""
import pytest
import torch

from normbook.common.models import TinyCNN, TinyMLP
from normbook.common.probes import (
    batch_stat_lm_loss,
    batchnorm_layers,
    bn_inputs,
    distances,
    frozen_distances,
    frozen_ema,
    noise_floor,
    precise_bn,
    running_stats,
    watch_batch_stats,
)
from normbook.common.train import lm_loss, set_seed
from normbook.common.transformer import TinyTransformer
from normlib import nn as ours


def test_distance_is_zero_when_running_stats_are_the_batch_stats():
    x = torch.randn(8, 3, 4, 4) * 2 + 5                      # N, C, H, W
    norm = ours.BatchNorm2d(3)
    with torch.no_grad():
        norm.running_mean.copy_(x.mean((0, 2, 3)))
        norm.running_var.copy_(x.var((0, 2, 3)))     # unbiased, as running_var
    with watch_batch_stats(norm) as record:
        norm(x)
    ((d_mu, d_var, count),) = record[""]
    assert d_mu == pytest.approx(0, abs=1e-6)
    assert d_var == pytest.approx(0, abs=1e-6)
    assert count == 8 * 4 * 4


def test_distance_units():
    # batch mean one running std above, batch variance 4x the running one,
    # in every channel
    running_mean, running_var = torch.ones(5), torch.full((5,), 4.0)
    d_mu, d_var = distances(torch.full((5,), 3.0), torch.full((5,), 16.0),
                            running_mean, running_var)
    assert (d_mu, d_var) == (1.0, 3.0)


def test_hooks_record_train_mode_only_and_are_removed():
    model = TinyCNN("bn")
    x = torch.randn(4, 1, 8, 8)
    with watch_batch_stats(model) as record:
        model(x)
        model.eval()(x)                             # eval mode: not recorded
        model.train()
    assert ({name: len(steps) for name, steps in record.items()}
            == {"norm1": 1, "norm2": 1})
    assert ([steps[0][2] for steps in record.values()]
            == [4 * 8 * 8, 4 * 4 * 4])
    model(x)
    assert len(record["norm1"]) == 1
    assert not any(module._forward_pre_hooks
                   for _, module in batchnorm_layers(model))
    with pytest.raises(RuntimeError), watch_batch_stats(model):
        raise RuntimeError("the hooks go even when the block fails")
    assert not any(module._forward_pre_hooks
                   for _, module in batchnorm_layers(model))


def test_transformer_layers_and_counts():
    set_seed(0)
    model = TinyTransformer(11, d_model=8, n_heads=2, n_layers=2, max_len=6,
                            norm="bn", causal=True)
    assert [name for name, _ in batchnorm_layers(model)] == [
        "blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1",
        "blocks.1.norm2", "norm_f"]
    with watch_batch_stats(model) as record:
        model(torch.randint(0, 11, (3, 6)))
    # B * T values per feature
    assert all(steps[0][2] == 3 * 6 for steps in record.values())
    ln = TinyTransformer(11, d_model=8, n_heads=2, max_len=6, norm="ln")
    assert not list(batchnorm_layers(ln))


@pytest.mark.parametrize("n", [16, 512])
def test_noise_floor_matches_monte_carlo(n):
    # 20,000 channels of n independent standard normal values: known mean 0
    # and variance 1
    x = torch.randn(n, 20_000, generator=torch.Generator().manual_seed(n),
                    dtype=torch.float64)
    measured = distances(x.mean(0), x.var(0), torch.zeros(20_000),
                         torch.ones(20_000))
    floor_mu, floor_var = noise_floor(n)
    assert measured[0] == pytest.approx(floor_mu, rel=0.03)
    assert measured[1] == pytest.approx(floor_var, rel=0.03)


def test_frozen_distances():
    g = torch.Generator().manual_seed(0)
    # samples, T, C: 64 batches of 32
    iid = torch.randn(64 * 32, 16, 4, generator=g)
    for scatter in (False, True):
        ratios = (torch.tensor(frozen_distances(iid, -1, 32, scatter))
                  / torch.tensor(noise_floor(32 * 16)))
        assert ((0.85 < ratios) & (ratios < 1.15)).all()
    # every batch (samples, C, H, W) a copy of one batch: same mean as the
    # whole; the unbiased variances of m = 8 * 2 * 2 values and of 5m values
    # differ only by their divisors, m - 1 and 5m - 1
    same = torch.randn(8, 3, 2, 2, generator=g).repeat(5, 1, 1, 1)
    m = 8 * 2 * 2
    assert frozen_distances(same, 1, 8) == pytest.approx(
        (0, (5 * m - 1) / (5 * (m - 1)) - 1), abs=1e-6)
    # whole samples that share a shift: batch means vary more than
    # independent values would
    shifted = (torch.randn(64 * 32, 16, 4, generator=g)
               + torch.randn(64 * 32, 1, 4, generator=g))
    assert (frozen_distances(shifted, -1, 32)[0]
            > 2 * frozen_distances(shifted, -1, 32, scatter=True)[0])


def test_bn_inputs_leave_the_model_alone():
    set_seed(0)
    model = TinyCNN("bn")
    x = torch.randn(16, 1, 8, 8)
    norm1 = dict(batchnorm_layers(model))["norm1"]
    before = norm1.running_mean.clone()
    inputs = bn_inputs(model, x, 8)
    assert set(inputs) == {"norm1", "norm2"}
    assert inputs["norm2"].shape == (16, 32, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(inputs["norm1"], model.conv1(x))
    torch.testing.assert_close(norm1.running_mean, before, rtol=0, atol=0)
    assert not norm1._forward_pre_hooks


def test_batch_stat_lm_loss():
    set_seed(0)
    windows = torch.randint(0, 11, (12, 7))                 # N, T + 1
    no_bn = TinyTransformer(11, d_model=8, n_heads=2, max_len=6, norm="ln",
                            causal=True)
    # without BatchNorm, train mode and eval mode are the same function
    assert batch_stat_lm_loss(no_bn, windows, 4) == pytest.approx(
        lm_loss(no_bn, windows), rel=1e-5)
    with_bn = TinyTransformer(11, d_model=8, n_heads=2, max_len=6, norm="bn",
                              causal=True)
    before = with_bn.norm_f.running_var.clone()
    assert batch_stat_lm_loss(with_bn, windows, 4) != pytest.approx(
        lm_loss(with_bn, windows), rel=1e-3)
    torch.testing.assert_close(with_bn.norm_f.running_var, before,
                               rtol=0, atol=0)
    assert with_bn.training


def test_precise_bn_is_the_plain_average_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = TinyMLP("bn").train()
    for _ in range(3):
        model(torch.randn(8, 1, 8, 8) * 3 + 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 1, 8, 8)
    twin = precise_bn(model, x, batch_size=16)
    assert all(torch.equal(before[k], v)
               for k, v in model.state_dict().items())
    assert not twin.training and twin.norm1.norm.momentum == 0.1
    with torch.no_grad():
        h = model.fc1(x.flatten(1))       # layer 1's input: fixed weights
    means = torch.stack([part.mean(0) for part in h.split(16)]).mean(0)
    torch.testing.assert_close(twin.norm1.norm.running_mean, means)


def test_precise_bn_turns_dropout_off():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(4, 3),
                                ours.BatchNorm1d(3))
    x = torch.randn(64, 4) + 1
    twin = precise_bn(model, x, batch_size=16)
    with torch.no_grad():
        h = model[1](x)                   # dropout off: the plain input
    means = torch.stack([part.mean(0) for part in h.split(16)]).mean(0)
    torch.testing.assert_close(twin[2].running_mean, means)
    assert model[0].training              # the model itself is untouched


def test_running_stats_are_copies_per_layer():
    model = TinyCNN("bn")
    stats = running_stats(model)
    assert list(stats) == ["norm1", "norm2"]
    model(torch.randn(4, 1, 8, 8) + 3)            # train mode: buffers move
    assert torch.equal(stats["norm1"][0], torch.zeros(16))
    assert not torch.equal(model.norm1.norm.running_mean, torch.zeros(16))


def test_frozen_ema_goes_on_averaging_with_the_weights_frozen():
    # a batch of all 12 rows: every batch statistic is the data's, so after
    # k batches r = (1 - m)^k r0 + (1 - (1 - m)^k) * statistic
    torch.manual_seed(0)
    model = torch.nn.Sequential(ours.BatchNorm1d(3))
    x = torch.randn(12, 3) * 2 + 1
    with torch.no_grad():
        model[0].running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = frozen_ema(model, x, batch_size=12, epochs=4, seed=0)
    assert all(torch.equal(before[k], v)
               for k, v in model.state_dict().items())
    assert not twin.training
    kept = 0.9 ** 4
    torch.testing.assert_close(twin[0].running_mean,
                               kept * 5.0 + (1 - kept) * x.mean(0))
    torch.testing.assert_close(twin[0].running_var,
                               kept * 1.0 + (1 - kept) * x.var(0))


def test_frozen_ema_sees_whole_epochs_of_full_batches():
    model = torch.nn.Sequential(ours.BatchNorm1d(2))
    x = torch.arange(22.0).repeat(2, 1).T            # row i holds i twice
    seen = []
    # the hook rides on the copy: deepcopy keeps forward pre-hooks
    model[0].register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0][:, 0].long()))
    frozen_ema(model, x, batch_size=5, epochs=2, seed=3)
    assert [len(batch) for batch in seen] == [5] * 8   # 4 per epoch, no tail
    for epoch in (seen[:4], seen[4:]):
        rows = torch.cat(epoch)
        assert len(rows.unique()) == 20                  # no row repeats
    with pytest.raises(ValueError, match="batch_size"):
        frozen_ema(model, x, batch_size=23)
