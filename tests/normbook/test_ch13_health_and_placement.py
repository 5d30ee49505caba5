"""normbook.ch13_health_and_placement: the networks, the detached norm, the
variance-shift formula and the runs' bookkeeping."""
import math

import pytest
import torch

from normbook.ch13_health_and_placement import (
    RUNS,
    CenteredMLP,
    DetachedBatchNorm1d,
    DropoutMLP,
    ProbeMLP,
    bn_input_variances,
    detached_run,
    health_run,
    predicted_shift,
    run,
)
from normbook.common.probes import precise_bn
from normlib.nn import BatchNorm1d


def test_probe_mlp_keeps_torch_default_init_or_draws_a_scaled_normal():
    torch.manual_seed(0)
    default = ProbeMLP(depth=3, width=256, norm="bn")
    weight = default.linears[1].weight
    assert weight.std().item() == pytest.approx(1 / math.sqrt(3 * 256),
                                                rel=0.05)
    assert weight.abs().max() <= 1 / math.sqrt(256)         # uniform
    scaled = ProbeMLP(depth=3, width=256, init_scale=3.0)
    assert scaled.linears[1].weight.std().item() == pytest.approx(
        3 / 16, rel=0.05)
    assert default(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_probe_mlp_has_a_bias_only_where_no_shift_follows():
    assert ProbeMLP(2, 8, "none").linears[0].bias is not None
    assert ProbeMLP(2, 8, "bn").linears[0].bias is None
    assert ProbeMLP(2, 8, "ln", place="after").linears[0].bias is not None
    with pytest.raises(ValueError, match="place"):
        ProbeMLP(2, 8, "bn", place="middle")


def test_probe_mlp_puts_the_norm_before_or_after_the_activation():
    torch.manual_seed(0)
    before = ProbeMLP(1, 16, "bn", "relu", "before").train()
    after = ProbeMLP(1, 16, "bn", "relu", "after").train()
    x = torch.randn(32, 1, 8, 8)
    seen = {}
    for name, model in (("before", before), ("after", after)):
        model.head.register_forward_hook(
            lambda m, inputs, out, name=name: seen.update({name: inputs[0]}))
        model(x)
    assert (seen["before"] >= 0).all()           # ReLU last
    assert (seen["after"] < 0).any()             # BN last: centred
    assert seen["after"].mean(0).abs().max() < 1e-5


def test_dropout_mlp_places_its_dropout():
    def count(model):
        return sum(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert [count(DropoutMLP(d)) for d in ("none", "every", "last")] == [
        0, 3, 1]
    last = list(DropoutMLP("last").body)
    assert isinstance(last[-1], torch.nn.Dropout)
    with pytest.raises(ValueError, match="dropout"):
        DropoutMLP("first")


def test_predicted_shift_matches_the_variance_dropout_adds():
    torch.manual_seed(0)
    model = DropoutMLP("every", p=0.5)
    model.train()(torch.randn(256, 1, 8, 8))     # running statistics
    # many copies of a few inputs: the mask noise averages out
    x = torch.randn(64, 1, 8, 8).repeat(200, 1, 1, 1)
    on = bn_input_variances(model, x, dropout_on=True)
    off = bn_input_variances(model, x, dropout_on=False)
    extra = predicted_shift(model, x)
    assert len(extra) == 2                         # dropouts before BN 2, 3
    assert torch.allclose(on[0], off[0])           # BN 1: no dropout before
    predicted = (off[1] + extra[0]).mean()
    assert predicted.item() == pytest.approx(on[1].mean().item(), rel=0.03)
    assert on[1].mean() > 1.2 * off[1].mean()      # the shift is there


def test_reestimated_statistics_leave_the_model_alone():
    # chapter 13 re-estimates with probes.precise_bn, which turns dropout off
    torch.manual_seed(0)
    model = DropoutMLP("every")
    model.train()(torch.randn(64, 1, 8, 8))
    saved = model.body[1].running_var.clone()
    twin = precise_bn(model, torch.randn(200, 1, 8, 8), batch_size=64)
    assert torch.equal(model.body[1].running_var, saved)
    assert not twin.training
    assert int(twin.body[1].num_batches_tracked) == 3   # 200 // 64 batches


def test_detached_norm_has_the_forward_of_batchnorm_not_its_backward():
    torch.manual_seed(0)
    x = torch.randn(16, 4) * 3 + 1
    g = torch.randn(16, 4)
    grads = {}
    for name, norm in (("derived", BatchNorm1d(4, affine=False)),
                       ("detached", DetachedBatchNorm1d())):
        xi = x.clone().requires_grad_()
        y = norm.train()(xi)
        (y * g).sum().backward()
        grads[name] = (y.detach(), xi.grad)
    assert torch.allclose(grads["derived"][0], grads["detached"][0],
                          atol=1e-5)
    # the derived gradient sums to 0 per channel (a bias gets none)
    assert grads["derived"][1].sum(0).abs().max() < 1e-5
    assert grads["detached"][1].sum(0).abs().max() > 1e-2


def test_centered_mlp_does_not_see_its_biases():
    torch.manual_seed(0)
    model = CenteredMLP(detached=True)
    x = torch.randn(32, 1, 8, 8)
    before = model(x)
    with torch.no_grad():
        for linear in model.linears:
            linear.bias += 50.0
    assert torch.allclose(model(x), before, atol=1e-3)


def test_runs_return_their_records():
    result = health_run(activation="relu", norm="bn", optimizer="sgd",
                        lr=0.1, seed=0, steps=3, depth=2, width=8)
    assert result["log_ratio"].shape == (3, 3)     # steps, 2 blocks + head
    assert len(result["after"]) == 2
    assert len(result["weight_growth"]) == 3
    derived = detached_run(detached=False, seed=0, steps=5)
    assert derived["bias_drift"].max() < 1e-6
    assert set(RUNS) == {"health", "placement", "dropout", "detached"}
    with pytest.raises(KeyError):
        run("nothing")
