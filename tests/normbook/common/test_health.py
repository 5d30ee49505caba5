"""normbook.common.health: each probe on a case whose answer is known."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normbook.common.health import (
    SATURATED,
    dead_fraction,
    histogram,
    layer_stats,
    probe,
    saturated_fraction,
    snapshot,
    update_ratios,
    weight_matrices,
)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def test_saturated_fraction_counts_entries_beyond_the_threshold():
    a = torch.tensor([[0.0, 0.5], [0.98, -0.99]])
    assert saturated_fraction(a) == 0.5
    assert saturated_fraction(a, threshold=0.1) == 0.75
    # the threshold is where tanh' falls below 6%
    assert 1 - SATURATED ** 2 < 0.06


def test_dead_fraction_counts_units_zero_on_every_sample():
    a = torch.tensor([[0.0, 1.0, 0.0, 0.0],
                      [0.0, 0.0, 2.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0]])
    assert dead_fraction(a) == 0.5                  # columns 0 and 3
    assert dead_fraction(torch.relu(torch.randn(64, 8)) + 1) == 0.0


def test_histogram_is_a_density_over_the_given_range():
    values = torch.linspace(-1, 1, 1001)
    centres, density = histogram(values, bins=10, limits=(-1, 1))
    assert len(centres) == len(density) == 10
    assert np.allclose(np.diff(centres), 0.2)
    assert np.sum(density * 0.2) == pytest.approx(1.0)
    assert np.allclose(density, 0.5, atol=0.01)     # uniform on [-1, 1]


def test_probe_returns_each_activation_and_its_autograd_gradient():
    net = small_net()
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    [(a, grad)] = probe(net, [net[1]], x, y)
    # the same quantities computed directly
    a_direct = torch.tanh(net[0](x))
    loss = F.cross_entropy(net[2](a_direct), y)
    (grad_direct,) = torch.autograd.grad(loss, a_direct)
    assert torch.allclose(a, a_direct)
    assert torch.allclose(grad, grad_direct)
    assert not net[1]._forward_hooks                # hooks removed
    assert net[0].weight.grad is not None           # the pass's gradients


def test_layer_stats_reads_a_known_layer():
    a = torch.tensor([[0.99, 0.0], [-0.99, 0.0]])
    stats = layer_stats(a, torch.ones(2, 2))
    assert stats["saturated"] == 0.5 and stats["dead"] == 0.5
    assert stats["mean"] == pytest.approx(0.0)
    assert stats["grad_std"] == 0.0
    assert len(stats["hist"][0]) == 60


def test_update_ratio_of_plain_sgd_is_lr_grad_over_weight():
    net, lr = small_net(), 0.05
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    F.cross_entropy(net(x), y).backward()
    expected = {name: (lr * p.grad).std().item() / p.std().item()
                for name, p in weight_matrices(net)}
    before = snapshot(net)
    torch.optim.SGD(net.parameters(), lr=lr).step()
    ratios = update_ratios(net, before)
    assert set(ratios) == {"0.weight", "2.weight"}  # no biases
    for name, value in ratios.items():
        assert value == pytest.approx(expected[name], rel=1e-4)


def test_update_ratio_is_zero_when_nothing_moves():
    net = small_net()
    before = snapshot(net)
    assert all(r == 0 for r in update_ratios(net, before).values())
