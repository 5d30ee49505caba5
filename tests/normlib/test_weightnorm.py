"""normlib.nn.weight_norm against torch.nn.utils.parametrizations.weight_norm:
the same parametrization, outputs and gradients, in float64.
"""
import copy

import pytest
import torch
from test_nn import close, randn
from torch import nn as tnn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as torch_weight_norm

from normlib import nn as ours

pytestmark = pytest.mark.filterwarnings("error")

# id: module, dim, input shape
CASES = {
    "Linear-dim=0": (lambda: tnn.Linear(5, 4), 0, (3, 5)),
    "Linear-dim=1": (lambda: tnn.Linear(5, 4), 1, (3, 5)),
    "Linear-dim=None": (lambda: tnn.Linear(5, 4), None, (3, 5)),
    "Linear-dim=-1": (lambda: tnn.Linear(5, 4), -1, (3, 5)),
    "Linear-dim=-2": (lambda: tnn.Linear(5, 4), -2, (3, 5)),
    "Conv2d-dim=0": (lambda: tnn.Conv2d(3, 4, 3), 0, (2, 3, 5, 5)),
    "Conv2d-dim=1": (lambda: tnn.Conv2d(3, 4, 3), 1, (2, 3, 5, 5)),
    "Conv2d-dim=2": (lambda: tnn.Conv2d(3, 4, 3), 2, (2, 3, 5, 5)),
    "Conv2d-dim=None": (lambda: tnn.Conv2d(3, 4, 3), None, (2, 3, 5, 5)),
}


def pair(case, seed=0):
    """(ours, torch's) weight norm of the same float64 module."""
    make, dim, _ = CASES[case]
    torch.manual_seed(seed)
    module = make().double()
    return (ours.weight_norm(copy.deepcopy(module), dim=dim),
            torch_weight_norm(copy.deepcopy(module), dim=dim))


def g_and_v(module):
    weight = module.parametrizations.weight
    return weight.original0, weight.original1


@pytest.mark.parametrize("case", CASES)
def test_same_parametrization_as_torch(case):
    mine, theirs = pair(case)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()):
        assert a.shape == b.shape
        close(a, b)
    assert type(mine).__name__ == type(theirs).__name__   # Parametrized...


@pytest.mark.parametrize("case", CASES)
def test_outputs_and_gradients_match_torch(case):
    mine, theirs = pair(case)
    # move g and v off their starting point (g = ||v||, so w = v)
    for module in (mine, theirs):
        g, v = g_and_v(module)
        with torch.no_grad():
            g.mul_(1 + 0.5 * randn(g.numel(), seed=1).abs().reshape(g.shape))
            v.add_(0.3 * randn(*v.shape, seed=2))
    x = randn(*CASES[case][2], seed=3)
    y, y_ref = mine(x), theirs(x)
    close(y, y_ref)
    dy = randn(*y.shape, seed=4)
    y.backward(dy), y_ref.backward(dy)
    for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
        close(p.grad, q.grad)


def test_weight_is_g_times_the_unit_direction():
    layer = ours.weight_norm(tnn.Linear(5, 4).double())
    g, v = g_and_v(layer)
    with torch.no_grad():
        g.copy_(randn(4, 1, seed=5))
    close(layer.weight, g * v / v.norm(dim=1, keepdim=True))
    close(layer.weight.norm(dim=1, keepdim=True), g.abs())


def test_gradcheck_and_gradgradcheck():
    layer = ours.weight_norm(tnn.Conv2d(2, 3, 2).double(), dim=1)
    g, v = (t.detach().clone().requires_grad_() for t in g_and_v(layer))
    parametrization = layer.parametrizations.weight[0]
    assert torch.autograd.gradcheck(parametrization, (g, v))
    assert torch.autograd.gradgradcheck(parametrization, (g, v))


def test_old_weight_g_and_weight_v_keys_load():
    layer = ours.weight_norm(tnn.Linear(5, 4).double())
    g, v = randn(4, 1, seed=6), randn(4, 5, seed=7)
    state = {"weight_g": g, "weight_v": v, "bias": randn(4, seed=8)}
    layer.load_state_dict(state)
    close(layer.weight, g * v / v.norm(dim=1, keepdim=True))


def test_remove_parametrizations_keeps_the_weight():
    layer = ours.weight_norm(tnn.Linear(5, 4).double())
    with torch.no_grad():
        g_and_v(layer)[0].mul_(2)
    weight = layer.weight.detach().clone()
    parametrize.remove_parametrizations(layer, "weight")
    close(layer.weight, weight)
    assert sorted(layer.state_dict()) == ["bias", "weight"]


def test_a_zero_slice_of_v_raises_where_torch_gives_nan():
    mine, theirs = pair("Linear-dim=0")
    for module in (mine, theirs):
        with torch.no_grad():
            g_and_v(module)[1][2].zero_()
    assert torch.isnan(theirs.weight[2]).all()      # torch: 0 / 0
    with pytest.raises(ValueError, match=r"original1.*1 slice.*zeros"):
        mine.weight


def test_dim_out_of_range_raises_as_torch():
    with pytest.raises(IndexError) as theirs:
        torch_weight_norm(tnn.Linear(5, 4), dim=2)
    with pytest.raises(IndexError) as mine:
        ours.weight_norm(tnn.Linear(5, 4), dim=2)
    assert str(mine.value) == str(theirs.value)


def test_other_parameter_names():
    torch.manual_seed(9)
    rnn = tnn.RNN(3, 4).double()
    mine = ours.weight_norm(copy.deepcopy(rnn), name="weight_hh_l0")
    theirs = torch_weight_norm(copy.deepcopy(rnn), name="weight_hh_l0")
    assert list(mine.state_dict()) == list(theirs.state_dict())
    close(mine.weight_hh_l0, theirs.weight_hh_l0)
