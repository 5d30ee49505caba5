"""normlib.nn.FrozenBatchNorm2d against torchvision's definition and
torch.nn.BatchNorm2d in eval mode, in float64.

torchvision is not installed beside our torch, so its definition is written
out below as the reference.
"""
import copy
import inspect

import pytest
import torch
from torch import nn as tnn

from normlib import nn as ours

pytestmark = pytest.mark.filterwarnings("error")

TOL = dict(rtol=1e-10, atol=1e-12)
BUFFERS = ["weight", "bias", "running_mean", "running_var"]


class TorchvisionFrozenBatchNorm2d(tnn.Module):
    """torchvision.ops.FrozenBatchNorm2d (pytorch/vision,
    torchvision/ops/misc.py), without its usage logging."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x):
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        bias = b - rm * scale
        return x * scale + bias

    def __repr__(self):
        return (f"{self.__class__.__name__}({self.weight.shape[0]}, "
                f"eps={self.eps})")


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=dtype)


def trained_batch_norm(channels=3, seed=0, **kwargs):
    """A float64 torch BatchNorm2d with random weight and bias and running
    statistics moved by three training batches."""
    bn = tnn.BatchNorm2d(channels, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(1 + 0.5 * randn(channels, seed=seed))
            bn.bias.copy_(randn(channels, seed=seed + 1))
    for step in range(3):
        bn(2 * randn(4, channels, 3, 3, seed=seed + 2 + step) + step)
    return bn.eval()


def frozen_pair(channels=3, eps=1e-5, seed=0):
    """(ours, torchvision's), float64, the same random buffers."""
    mine = ours.FrozenBatchNorm2d(channels, eps).double()
    theirs = TorchvisionFrozenBatchNorm2d(channels, eps).double()
    values = {"weight": 1 + 0.5 * randn(channels, seed=seed),
              "bias": randn(channels, seed=seed + 1),
              "running_mean": randn(channels, seed=seed + 2),
              "running_var": 0.5 + randn(channels, seed=seed + 3).abs()}
    mine.load_state_dict(values)
    theirs.load_state_dict(values)
    return mine, theirs


def test_state_dict_holds_exactly_the_four_buffers():
    frozen = ours.FrozenBatchNorm2d(3)
    assert list(frozen.state_dict()) == BUFFERS
    assert [n for n, _ in frozen.named_buffers()] == BUFFERS
    assert list(frozen.parameters()) == []
    reference = TorchvisionFrozenBatchNorm2d(3).state_dict()
    for key, value in frozen.state_dict().items():
        assert value.dtype == reference[key].dtype, key
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)


def test_signature_and_repr_match_torchvision():
    assert (inspect.signature(ours.FrozenBatchNorm2d)
            == inspect.signature(TorchvisionFrozenBatchNorm2d))
    for args in ((3,), (5, 1e-3)):
        assert (repr(ours.FrozenBatchNorm2d(*args))
                == repr(TorchvisionFrozenBatchNorm2d(*args))
                .replace("Torchvision", ""))


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 3, 1, 1)],
                         ids=["(2,3,4,5)", "(1,3,1,1)"])
def test_forward_matches_torchvision(shape, eps):
    mine, theirs = frozen_pair(eps=eps)
    x = 3 * randn(*shape, seed=10) + 1
    torch.testing.assert_close(mine(x), theirs(x), **TOL)


def test_loads_a_batchnorm2d_state_dict_without_num_batches_tracked():
    state = trained_batch_norm().state_dict()
    assert "num_batches_tracked" in state
    for frozen in (ours.FrozenBatchNorm2d(3).double(),
                   TorchvisionFrozenBatchNorm2d(3).double()):
        result = frozen.load_state_dict(state, strict=True)
        assert result.missing_keys == result.unexpected_keys == []
        for key in BUFFERS:
            torch.testing.assert_close(getattr(frozen, key), state[key],
                                       rtol=0, atol=0)
    assert "num_batches_tracked" in state    # the caller's dict is untouched


def test_equals_the_batchnorm2d_it_was_loaded_from_in_eval():
    bn = trained_batch_norm()
    frozen = ours.FrozenBatchNorm2d(3).double()
    frozen.load_state_dict(bn.state_dict())
    x, dy = 2 * randn(2, 3, 4, 5, seed=20) - 1, randn(2, 3, 4, 5, seed=21)
    results = []
    for module in (frozen, bn):
        xi = x.clone().requires_grad_()
        y = module(xi)
        y.backward(dy)
        results.append((y.detach(), xi.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, **TOL)


def test_train_mode_changes_neither_output_nor_buffers():
    frozen, _ = frozen_pair()
    before = copy.deepcopy(frozen.state_dict())
    x = randn(4, 3, 2, 2, seed=30)
    y_eval = frozen.eval()(x)
    y_train = frozen.train()(x)
    torch.testing.assert_close(y_train, y_eval, rtol=0, atol=0)
    for key, value in frozen.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_gradient_reaches_the_input_and_no_buffer():
    frozen, _ = frozen_pair()
    x = randn(2, 3, 4, 4, seed=40).requires_grad_()
    dy = randn(2, 3, 4, 4, seed=41)
    frozen(x).backward(dy)
    # the derived backward of an affine map: dx = dy * scale
    scale = frozen.weight * (frozen.running_var + frozen.eps).rsqrt()
    torch.testing.assert_close(x.grad, dy * scale.reshape(1, 3, 1, 1), **TOL)
    for name, buffer in frozen.named_buffers():
        assert not buffer.requires_grad and buffer.grad is None, name


def test_gradcheck_with_respect_to_the_input():
    frozen, _ = frozen_pair()
    x = randn(2, 3, 2, 3, seed=50).requires_grad_()
    assert torch.autograd.gradcheck(frozen, (x,))


def test_half_input_gives_torchvisions_dtype_and_values():
    mine, theirs = (m.float() for m in frozen_pair())
    x = randn(2, 3, 4, 4, seed=60, dtype=torch.float32).bfloat16()
    y, y_ref = mine(x), theirs(x)
    assert y.dtype == y_ref.dtype == torch.float32
    torch.testing.assert_close(y, y_ref)


def small_model():
    """A conv net with torch's and normlib's BatchNorm2d and SyncBatchNorm,
    one without affine parameters, nested one level; running statistics
    moved by a few training batches."""
    torch.manual_seed(0)
    model = tnn.Sequential(
        tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(),
        tnn.Sequential(tnn.Conv2d(4, 4, 1), ours.BatchNorm2d(4),
                       tnn.BatchNorm2d(4, affine=False)),
        tnn.SyncBatchNorm(4), ours.SyncBatchNorm(4)).double()
    with torch.no_grad():
        for step in range(3):
            model[:4](randn(4, 3, 5, 5, seed=70 + step) + step)
    # SyncBatchNorm trains only in a process group; eval for the reference
    return model.eval()


def test_convert_frozen_batchnorm_freezes_a_small_model():
    model = small_model()
    reference = copy.deepcopy(model)
    kept = [model[0], model[2], model[3], model[3][0]]
    converted = ours.FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert converted is model                   # children converted in place
    assert [type(m).__name__ for m in model.modules()] == [
        "Sequential", "Conv2d", "FrozenBatchNorm2d", "ReLU", "Sequential",
        "Conv2d", "FrozenBatchNorm2d", "FrozenBatchNorm2d",
        "FrozenBatchNorm2d", "FrozenBatchNorm2d"]
    assert [model[0], model[2], model[3], model[3][0]] == kept
    # only the convolutions are left for an optimizer
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "3.0.weight", "3.0.bias"]
    x = randn(2, 3, 5, 5, seed=80)
    torch.testing.assert_close(model.train()(x), reference(x), **TOL)


def test_convert_frozen_batchnorm_returns_a_new_layer_of_copies():
    bn = trained_batch_norm(eps=1e-3)
    frozen = ours.FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert type(frozen) is ours.FrozenBatchNorm2d and frozen.eps == 1e-3
    for key in BUFFERS:
        value = getattr(frozen, key)
        assert value.dtype == torch.float64, key
        torch.testing.assert_close(value, getattr(bn, key), rtol=0, atol=0)
        assert value.data_ptr() != getattr(bn, key).data_ptr(), key
    x = randn(2, 3, 4, 4, seed=90)
    torch.testing.assert_close(frozen(x), bn(x), **TOL)


def test_convert_frozen_batchnorm_refuses_a_layer_without_statistics():
    bn = tnn.BatchNorm2d(3, track_running_stats=False)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        ours.FrozenBatchNorm2d.convert_frozen_batchnorm(tnn.Sequential(bn))


# id: call, error type, regex naming the argument, torch.nn.BatchNorm2d
# in eval raises the same type for that input
ERRORS = {
    "3D": (lambda M: M(3)(torch.zeros(2, 3, 4)),
           ValueError, r"\binput\b", True),
    "5D": (lambda M: M(3)(torch.zeros(2, 3, 2, 2, 2)),
           ValueError, r"\binput\b", True),
    "channels": (lambda M: M(3)(torch.zeros(2, 4, 2, 2)),
                 RuntimeError, "num_features=3", True),
    "eps=0": (lambda M: M(3, eps=0.0), ValueError, r"\beps\b", False),
    "eps<0": (lambda M: M(3, eps=-1e-5), ValueError, r"\beps\b", False),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_raises_naming_the_argument(case):
    call, error, message, batch_norm_raises = ERRORS[case]
    with pytest.raises(error, match=message):
        call(ours.FrozenBatchNorm2d)
    if batch_norm_raises:
        with pytest.raises(error):
            call(lambda *a, **k: tnn.BatchNorm2d(*a, **k).eval())
