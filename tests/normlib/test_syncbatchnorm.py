"""normlib.nn.SyncBatchNorm: across processes, BatchNorm on the whole batch.

Real gloo groups of 2 and 3 processes, one per size for the whole module:
starting a process costs seconds.
"""
import pytest
import torch

import normbook.ch11_batchnorm_across_processes as ch10
from normlib import nn as nl
from normlib.nn import SyncBatchNorm

TOL = 1e-12   # float64




@pytest.mark.parametrize("shares, tail",
                         [((8, 8), ()), ((3, 5), (4, 5)), ((2, 0), (3,))])
def test_two_processes_equal_batchnorm_on_the_whole_batch(
        group2, shares, tail):
    results = group2.run(ch10.sync_step_rank, shares, tail, 0)
    errors = ch10.sync_errors(results, shares, tail, 0)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shares, tail", [((5, 2, 9), ()),
                                          ((3, 1, 4), (4, 5)),
                                          ((1, 6, 1), (2, 3))])
def test_three_processes_unequal_shares_equal_batchnorm(group3, shares, tail):
    results = group3.run(ch10.sync_step_rank, shares, tail, 1)
    errors = ch10.sync_errors(results, shares, tail, 1)
    assert max(errors.values()) < TOL, errors


def test_collectives_one_per_direction_bytes_as_the_formula(group2):
    results = group2.run(ch10.sync_step_rank, (4, 4), (), 0)
    expected = ch10.collective_bytes(ch10.CHANNELS, 8)
    for result in results:   # two training steps
        assert result["calls"] == 4
        assert result["bytes"] == 2 * (expected["forward"]
                                       + expected["backward"])


def _bad_input_rank(rank, world_size, case):
    layer = SyncBatchNorm(3)
    if case == "one value":            # one row in all, on rank 0
        return ch10.one_row_in_all_rank(rank, world_size)
    if case == "channels":
        return layer(torch.randn(4, 5))
    return layer(torch.randn(3))        # 1-D


@pytest.mark.parametrize("case, error, message", [
    ("one value", ValueError,
     "Expected more than 1 value per channel when training, got 1 across 2"),
    ("channels", RuntimeError, "num_features=3"),
    ("ndim", ValueError, "expected at least 2D input (got 1D input)")])
def test_bad_input_clear_errors_group_stays_usable(
        group2, case, error, message):
    pattern = message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(error, match=pattern):
        group2.run(_bad_input_rank, case)
    # still usable
    assert group2.run(ch10.sync_step_rank, (2, 2), (), 0)[0]["calls"] == 4


def _eval_rank(rank, world_size):
    torch.manual_seed(rank)
    layer = SyncBatchNorm(3)
    layer(torch.randn(6, 3, 2) + 1)     # moves the running statistics
    layer.eval()
    x = torch.randn(4, 3, 2)
    plain = torch.nn.BatchNorm1d(3)
    plain.load_state_dict(layer.state_dict())
    calls = layer.collectives.calls
    return ((layer(x) - plain.eval()(x)).abs().max().item(),
            layer.collectives.calls - calls)


def test_eval_mode_is_plain_batchnorm_without_collectives(group2):
    for error, calls in group2.run(_eval_rank):
        assert error < 1e-6 and calls == 0


def _bfloat16_rank(rank, world_size):
    torch.manual_seed(rank)
    x = (3 * torch.randn(5, 3, 4) + 2).requires_grad_()
    layer = SyncBatchNorm(3)
    low = x.detach().bfloat16().requires_grad_()
    y, y_low = layer(x), layer(low)
    y.backward(torch.ones_like(y) + x.detach())
    y_low.backward((torch.ones_like(y) + x.detach()).bfloat16())
    return (y_low.dtype, low.grad.dtype,
            (y_low.float() - y).abs().max().item(),
            (low.grad.float() - x.grad).abs().max().item())


def test_bfloat16_input_float32_statistics(group2):
    results = group2.run(_bfloat16_rank)
    for y_dtype, grad_dtype, y_error, grad_error in results:
        assert y_dtype == grad_dtype == torch.bfloat16
        assert y_error < 0.05 and grad_error < 0.05


def test_without_a_group_it_is_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    sync = SyncBatchNorm(3, dtype=torch.float64)
    plain = nl.BatchNorm2d(3, dtype=torch.float64)
    y_sync, y_plain = sync(x), plain(x)
    dx_sync, = torch.autograd.grad(y_sync.sum() ** 2, x)
    dx_plain, = torch.autograd.grad(y_plain.sum() ** 2, x)
    assert torch.allclose(y_sync, y_plain)
    assert torch.allclose(dx_sync, dx_plain)
    assert torch.allclose(sync.running_var, plain.running_var)
    with pytest.raises(ValueError,
                       match=r"expected at least 2D input \(got 1D input\)"):
        sync(torch.randn(3))


def test_state_dict_keys_and_repr_like_torch():
    ours, theirs = SyncBatchNorm(5), torch.nn.SyncBatchNorm(5)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    assert (repr(ours).removeprefix("SyncBatchNorm")
            == repr(theirs).removeprefix("SyncBatchNorm"))


def test_convert_sync_batchnorm_keeps_parameters_statistics_and_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3),
                                torch.nn.BatchNorm2d(4, momentum=0.2),
                                torch.nn.Flatten(), torch.nn.Linear(64, 6),
                                nl.BatchNorm1d(6))
    model(torch.randn(5, 1, 6, 6))       # running statistics move
    model[4].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 1, 6, 6)
    expected = model.eval()(x)
    model.train()[4].eval()
    converted = SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], SyncBatchNorm)
    assert isinstance(converted[4], SyncBatchNorm)
    assert converted[1].momentum == 0.2 and converted[1].training
    assert not converted[4].training
    assert converted[1].weight is model[1].weight
    after = converted.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.allclose(converted.eval()(x), expected, atol=1e-6)
    single = SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm1d(3))
    assert isinstance(single, SyncBatchNorm)
