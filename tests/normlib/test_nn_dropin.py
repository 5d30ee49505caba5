"""What a user swapping torch.nn for normlib.nn meets beyond the usual batch:
checked against torch.

Second derivatives, empty batches, InstanceNorm, half-precision inputs,
pickling and saving, memory layouts, the meta device, torch.compile and
torch.func.
"""
import copy
import io
import pickle
import warnings

import pytest
import torch
from norm_cases import MODULES, precision_errors
from test_nn import (
    assert_same_buffers,
    close,
    forward_backward,
    pad_mask_from_lengths,
    pair,
    randn,
    run,
)
from torch import nn as tnn

from normlib import nn as ours

pytestmark = pytest.mark.filterwarnings("error")

# id: class name, constructor args, constructor kwargs, input shape
MODULE_CASES = {
    "BatchNorm1d": ("BatchNorm1d", (3,), {}, (4, 3, 2)),
    "BatchNorm2d": ("BatchNorm2d", (3,), {}, (2, 3, 2, 2)),
    "SequenceBatchNorm": ("SequenceBatchNorm", (3,), {}, (2, 4, 3)),
    "InstanceNorm1d": ("InstanceNorm1d", (3,),
                       {"affine": True, "track_running_stats": True},
                       (2, 3, 4)),
    "InstanceNorm2d": ("InstanceNorm2d", (3,), {"affine": True}, (2, 3, 2, 3)),
    "LayerNorm": ("LayerNorm", (4,), {}, (3, 4)),
    "LayerNorm-unbatched": ("LayerNorm", (4,), {}, (4,)),
    "GroupNorm": ("GroupNorm", (2, 4), {}, (2, 4, 3)),
    "RMSNorm": ("RMSNorm", (4,), {}, (3, 4)),
}


# ---- second derivatives -----------------------------------------------------

def functional_call(module):
    """module as a function of (x, *parameters), for gradcheck and
    gradgradcheck."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_()
              for _, p in module.named_parameters()]
    return (lambda x, *ps: torch.func.functional_call(
        module, dict(zip(names, ps)), (x,))), params


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", MODULE_CASES)
def test_gradgradcheck(case, mode):
    name, args, kwargs, shape = MODULE_CASES[case]
    module = getattr(pair(name, args, kwargs)[0], mode)()
    call, params = functional_call(module)
    x = randn(*shape, seed=1).requires_grad_()
    assert torch.autograd.gradgradcheck(call, (x, *params))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradgradcheck_with_pad_mask(mode):
    module = getattr(pair("SequenceBatchNorm", (3,), {})[0], mode)()
    pad_mask = pad_mask_from_lengths([4, 2, 1], 4)

    def call(x, w, b):
        return torch.func.functional_call(module, {"weight": w, "bias": b},
                                          (x,), {"pad_mask": pad_mask})

    _, params = functional_call(module)
    assert torch.autograd.gradgradcheck(
        call, (randn(3, 4, 3, seed=1).requires_grad_(), *params))


@pytest.mark.parametrize("case", MODULE_CASES)
def test_gradient_penalty_matches_torch(case):
    """A WGAN-GP critic's penalty, (|d out / d x| - 1)^2, differentiated with
    respect to x and the parameters."""
    name, args, kwargs, shape = MODULE_CASES[case]
    grads = []
    for module in pair(name, args, kwargs):
        x = (2 * randn(*shape, seed=2) + 1).requires_grad_()
        out = (run(module, x) * randn(*shape, seed=3)).sum()
        (dx,) = torch.autograd.grad(out, x, create_graph=True)
        penalty = (dx.norm() - 1) ** 2
        # bias does not move dx: its gradient is zero, materialized on both
        # sides
        grads.append(torch.autograd.grad(penalty, [x, *module.parameters()],
                                         allow_unused=True,
                                         materialize_grads=True))
    for mine, theirs in zip(*grads):
        close(mine, theirs)


@pytest.mark.parametrize("name, args, kwargs, shape", [
    ("LayerNorm", (4,), {"elementwise_affine": False}, (3, 4)),
    ("GroupNorm", (2, 4), {"affine": False}, (2, 4, 3)),
    ("BatchNorm1d", (3,), {"affine": False}, (4, 3)),
    ("InstanceNorm1d", (3,), {}, (2, 3, 4))])
def test_output_may_be_changed_in_place(name, args, kwargs, shape):
    """Regression: an in-place ReLU after the norm broke backward (without
    weight and bias the output was the cached xhat; GroupNorm's output was a
    view)."""
    grads = []
    for module in pair(name, args, kwargs):
        x = randn(*shape, seed=8).requires_grad_()
        torch.relu_(module(x)).backward(randn(*shape, seed=9))
        grads.append(x.grad)
    close(*grads)


# ---- empty batches ----------------------------------------------------------
EMPTY = {  # id: class name, args, kwargs, input shape with a zero
    "BatchNorm1d-N=0": ("BatchNorm1d", (3,), {}, (0, 3)),
    "BatchNorm1d-N=0-momentum=None": ("BatchNorm1d", (3,), {"momentum": None},
                                      (0, 3, 4)),
    "BatchNorm1d-L=0": ("BatchNorm1d", (3,), {}, (2, 3, 0)),
    "BatchNorm2d-N=0": ("BatchNorm2d", (3,), {}, (0, 3, 2, 2)),
    "BatchNorm2d-H=0-no-tracking": (
        "BatchNorm2d", (3,), {"track_running_stats": False}, (2, 3, 0, 2)),
    "InstanceNorm1d-N=0": ("InstanceNorm1d", (3,), {}, (0, 3, 4)),
    "InstanceNorm2d-H=0-affine": (
        "InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True},
        (2, 3, 0, 2)),
    "LayerNorm-N=0": ("LayerNorm", (3,), {}, (0, 3)),
    "LayerNorm-T=0": ("LayerNorm", (3,), {}, (2, 0, 3)),
    "LayerNorm-normalized_shape=0": ("LayerNorm", (0,), {}, (2, 0)),
    "GroupNorm-N=0": ("GroupNorm", (1, 3), {}, (0, 3, 4)),
    "RMSNorm-N=0": ("RMSNorm", (3,), {}, (0, 3)),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", EMPTY)
def test_empty_batch_matches_torch(case, mode):
    name, args, kwargs, shape = EMPTY[case]
    mine, theirs = pair(name, args, kwargs)
    for module in (mine, theirs):
        getattr(module, mode)()
    x = torch.zeros(shape, dtype=torch.float64)
    for _ in range(2):
        y, dx, grads = forward_backward(mine, x, x)
        y_ref, dx_ref, grads_ref = forward_backward(theirs, x, x)
        assert y.shape == y_ref.shape and dx.shape == dx_ref.shape
        for n in grads_ref:
            close(grads[n], grads_ref[n])
        if hasattr(theirs, "running_mean"):
            assert_same_buffers(mine, theirs)


def test_empty_batch_where_torch_gives_nan_or_fails():
    """Three torch quirks normlib does not copy: NaN weight.grad, NaN running
    stats, IndexError."""
    gn = ours.GroupNorm(1, 3)
    gn(torch.zeros(2, 3, 0, requires_grad=True)).sum().backward()
    # torch: nan (0 / 0 in its kernel); the sum over no values is 0
    assert (gn.weight.grad == 0).all()
    instance = ours.InstanceNorm1d(3, affine=True)
    # torch: IndexError from inside F.instance_norm
    y = instance(torch.zeros(0, 3, 4))
    assert y.shape == (0, 3, 4)
    instance = ours.InstanceNorm1d(3, track_running_stats=True)
    # torch: running_mean and running_var become nan
    instance(torch.zeros(0, 3, 4))
    assert ((instance.running_mean == 0).all()
            and (instance.running_var == 1).all())


# ---- InstanceNorm -----------------------------------------------------------
INSTANCE = {  # id: class name, kwargs, batched input shape
    "1d-defaults": ("InstanceNorm1d", {}, (4, 3, 5)),
    "1d-affine": ("InstanceNorm1d", {"affine": True}, (4, 3, 5)),
    "1d-tracking": ("InstanceNorm1d", {"track_running_stats": True},
                    (4, 3, 5)),
    "1d-tracking-momentum=None": (
        "InstanceNorm1d", {"track_running_stats": True, "momentum": None},
        (4, 3, 5)),
    "1d-affine-bias=False-tracking": (
        "InstanceNorm1d", {"affine": True, "bias": False,
                           "track_running_stats": True, "momentum": 0.3},
        (2, 3, 6)),
    "2d-defaults": ("InstanceNorm2d", {}, (2, 3, 4, 5)),
    "2d-affine-tracking": (
        "InstanceNorm2d", {"affine": True, "track_running_stats": True},
        (2, 3, 4, 5)),
    "2d-N=1": (
        "InstanceNorm2d", {"affine": True, "track_running_stats": True},
        (1, 3, 2, 2)),
}


@pytest.mark.parametrize("unbatched", [False, True],
                         ids=["batched", "unbatched"])
@pytest.mark.parametrize("case", INSTANCE)
def test_instance_norm_matches_torch(case, unbatched):
    name, kwargs, shape = INSTANCE[case]
    shape = shape[1:] if unbatched else shape
    mine, theirs = pair(name, (3,), kwargs)
    for step in range(3):
        x, dy = ((1 + step) * randn(*shape, seed=step) + step,
                 randn(*shape, seed=10 + step))
        for results in zip(forward_backward(mine, x, dy),
                           forward_backward(theirs, x, dy)):
            torch.utils._pytree.tree_map(close, *results)
        assert_same_buffers(mine, theirs)
        if step == 1:
            mine.eval(), theirs.eval()


def test_instance_norm_errors_and_warnings_match_torch():
    for library in (ours, tnn):
        with pytest.raises(ValueError, match="expected 2D or 3D input"):
            library.InstanceNorm1d(3)(torch.zeros(2, 3, 4, 5))
        with pytest.raises(ValueError, match="expected 3D or 4D input"):
            library.InstanceNorm2d(3)(torch.zeros(3, 4))
        with pytest.raises(ValueError, match="num_features"):
            library.InstanceNorm1d(3, affine=True)(torch.zeros(2, 4, 5))
        with pytest.raises(ValueError, match="more than 1 spatial element"):
            library.InstanceNorm2d(3)(torch.zeros(2, 3, 1, 1))
        with pytest.warns(UserWarning, match="does not match num_features"):
            library.InstanceNorm1d(3)(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"\beps\b"):
        ours.InstanceNorm1d(3, eps=0)


# ---- half-precision inputs --------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16],
                         ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", MODULES)
def test_half_input_is_no_less_accurate_than_torch(name, dtype):
    """y, dx and dweight against float64: within 2x torch's error plus a
    floor of 3e-7 (relative)."""
    errors = precision_errors(name, dtype)
    for quantity, mine, theirs in zip(("y", "dx", "dweight"),
                                      errors["normlib"], errors["torch"]):
        assert mine <= 2 * theirs + 3e-7, (quantity, mine, theirs)


@pytest.mark.parametrize("case", [c for c in MODULE_CASES
                                  if c != "SequenceBatchNorm"])
@pytest.mark.parametrize("module_dtype", [torch.float32, torch.bfloat16],
                         ids=["float32-module", "bfloat16-module"])
def test_half_input_dtypes_match_torch(case, module_dtype):
    name, args, kwargs, shape = MODULE_CASES[case]
    mine, theirs = (getattr(library, name)(*args, **kwargs, dtype=module_dtype)
                    for library in (ours, tnn))
    x = randn(*shape, dtype=torch.float32).to(torch.bfloat16)
    for mode in ("train", "eval"):
        results = []
        for module in (mine, theirs):
            with warnings.catch_warnings():
                # torch's RMSNorm: a float32 weight "cannot dispatch to fused
                # implementation"
                if module is theirs:
                    warnings.simplefilter("ignore")
                y, dx, grads = forward_backward(getattr(module, mode)(), x,
                                                torch.ones_like(x))
            results.append((y.dtype, dx.dtype,
                            {n: g.dtype for n, g in grads.items()},
                            {n: b.dtype for n, b in module.named_buffers()}))
        assert results[0] == results[1], mode


def test_mixed_dtypes_torch_refuses_are_refused():
    for make in (lambda M: M.BatchNorm1d(3), lambda M: M.LayerNorm(3),
                 lambda M: M.GroupNorm(1, 3)):
        for library in (ours, tnn):
            with pytest.raises(RuntimeError, match="mixed dtype"):
                make(library)(torch.randn(4, 3, dtype=torch.float64))


# ---- pickling, saving, layouts, devices, compile ----------------------------

def round_trips(module):
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    yield "torch.save", torch.load(buffer, weights_only=False)
    yield "pickle", pickle.loads(pickle.dumps(module))
    yield "deepcopy", copy.deepcopy(module)


@pytest.mark.parametrize("case", MODULE_CASES)
def test_pickle_deepcopy_and_torch_save_keep_the_module(case):
    name, args, kwargs, shape = MODULE_CASES[case]
    module = pair(name, args, kwargs)[0]
    x = randn(*shape, seed=4)
    # running statistics move away from their start
    run(module, x)
    module.eval()
    for how, restored in round_trips(module):
        assert (type(restored) is type(module)
                and repr(restored) == repr(module)), how
        for key, value in module.state_dict().items():
            torch.testing.assert_close(restored.state_dict()[key], value,
                                       rtol=0, atol=0)
        close(restored(x), module(x))


def old_checkpoint(state, version):
    """A state_dict as an older torch wrote it: version 1 (no
    num_batches_tracked) or none at all."""
    state = type(state)((k, v) for k, v in state.items()
                        if version is not None or k != "num_batches_tracked")
    state._metadata = {"": {"version": version}} if version is not None else {}
    return state


@pytest.mark.parametrize("name", ["BatchNorm1d", "InstanceNorm1d"])
def test_old_checkpoints_load_as_in_torch(name):
    mine, theirs = (getattr(library, name)(3, track_running_stats=True,
                                           dtype=torch.float64)
                    for library in (ours, tnn))
    for module in (mine, theirs):
        module(randn(4, 3, 5))
        # keeps num_batches_tracked
        module.load_state_dict(old_checkpoint(module.state_dict(), version=1))
    assert_same_buffers(mine, theirs)
    errors = []
    # InstanceNorm before torch 0.4 always saved running statistics
    for library in (ours, tnn):
        untracked = getattr(library, name)(3, track_running_stats=False)
        with pytest.raises(RuntimeError) as info:
            untracked.load_state_dict(old_checkpoint(theirs.state_dict(),
                                                     version=None))
        errors.append(str(info.value))
    assert errors[0] == errors[1]


LAYOUTS = {
    "transposed": lambda x: x.transpose(0, 1).contiguous().transpose(0, 1),
    "strided": lambda x: torch.repeat_interleave(x, 2, dim=-1)[..., ::2],
    "channels_last": lambda x: (x.contiguous(memory_format=torch.channels_last)
                                if x.dim() == 4 else x),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", ["BatchNorm2d", "InstanceNorm2d", "GroupNorm",
                                  "LayerNorm", "RMSNorm"])
def test_non_contiguous_inputs_match_torch(case, layout):
    name, args, kwargs, shape = MODULE_CASES[case]
    shape = ((2, 4, 3, 2) if name == "GroupNorm"
             else (2, 3, 2, 4) if "Norm2d" not in name else shape)
    args = (4,) if name in ("LayerNorm", "RMSNorm") else args
    mine, theirs = pair(name, args, kwargs)
    x = LAYOUTS[layout](randn(*shape, seed=5))
    assert not x.is_contiguous() or layout == "channels_last"
    dy = randn(*shape, seed=6)
    for a, b in zip(forward_backward(mine, x, dy),
                    forward_backward(theirs, x, dy)):
        torch.utils._pytree.tree_map(close, a, b)
    # the others: torch returns contiguous
    if layout == "channels_last" and name in ("BatchNorm2d", "GroupNorm"):
        cl = torch.channels_last
        assert (mine(x).is_contiguous(memory_format=cl)
                == theirs(x).is_contiguous(memory_format=cl))


@pytest.mark.parametrize("case", MODULE_CASES)
def test_meta_device_construction_and_forward(case):
    name, args, kwargs, shape = MODULE_CASES[case]
    torch_name = "BatchNorm1d" if name == "SequenceBatchNorm" else name
    mine = getattr(ours, name)(*args, **kwargs, device="meta")
    theirs = getattr(tnn, torch_name)(*args, **kwargs, device="meta")
    assert ({k: (v.device, v.shape, v.dtype)
             for k, v in mine.state_dict().items()}
            == {k: (v.device, v.shape, v.dtype)
                for k, v in theirs.state_dict().items()})
    x = torch.empty(shape, device="meta", requires_grad=True)
    for mode in ("train", "eval"):
        y = run(getattr(mine, mode)(), x)
        y.sum().backward()
        assert y.device.type == "meta" and y.shape == x.shape


@pytest.mark.parametrize("case", ["LayerNorm", "BatchNorm1d"])
def test_torch_compile(case):
    """aot_eager: dynamo and AOTAutograd without inductor's C++ compile
    (which takes ~20 s here)."""
    name, args, kwargs, shape = MODULE_CASES[case]
    mine, reference = pair(name, args, kwargs)[0], pair(name, args, kwargs)[0]
    compiled = torch.compile(mine, backend="aot_eager")
    for step in range(2):
        x, dy = randn(*shape, seed=7 + step), randn(*shape, seed=9 + step)
        with warnings.catch_warnings():
            # dynamo warns about torch's own code as it traces it
            warnings.simplefilter("ignore")
            y, dx, _ = forward_backward(compiled, x, dy)
        y_ref, dx_ref, grads_ref = forward_backward(reference, x, dy)
        close(y, y_ref), close(dx, dx_ref)
        for n, p in mine.named_parameters():
            close(p.grad, grads_ref[n])
    if hasattr(mine, "running_mean"):
        assert_same_buffers(mine, reference)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", MODULE_CASES)
def test_vmap_over_stacked_modules_is_a_loop_over_them(case, mode):
    """torch.func.vmap over E modules' stacked parameters and buffers (an
    ensemble trained as one)."""
    name, args, kwargs, shape = MODULE_CASES[case]
    members = [getattr(pair(name, args, kwargs, seed=10 * i)[0], mode)()
               for i in range(3)]
    alone = copy.deepcopy(members)
    params, buffers = torch.func.stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x, dy = 2 * randn(3, *shape, seed=1) + 1, randn(3, *shape, seed=2)

    def call(p, b, x):
        return torch.func.functional_call(base, (p, b), (x,))

    y = torch.func.vmap(call)(params, buffers, x)
    y.backward(dy)
    for i, member in enumerate(alone):
        x_i = x[i].clone().requires_grad_()
        y_i = member(x_i)
        y_i.backward(dy[i])
        close(y[i].detach(), y_i.detach())
        for n, p in member.named_parameters():
            close(params[n].grad[i], p.grad)
        for n, b in member.named_buffers():
            torch.testing.assert_close(buffers[n][i], b,
                                       rtol=1e-10, atol=1e-12)


def test_func_grad_and_per_sample_gradients():
    layer = pair("LayerNorm", (4,), {})[0]
    x = randn(5, 4, seed=3)
    per_sample = torch.func.vmap(
        torch.func.grad(lambda x: (layer(x) ** 3).sum()))(x)
    for i in range(5):
        x_i = x[i].clone().requires_grad_()
        (layer(x_i) ** 3).sum().backward()
        close(per_sample[i], x_i.grad)


def test_vmap_with_pad_mask():
    members = [pair("SequenceBatchNorm", (3,), {}, seed=10 * i)[0]
               for i in range(3)]
    alone = copy.deepcopy(members)
    params, buffers = torch.func.stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    x, pad_mask = (randn(3, 4, 5, 3, seed=4),
                   pad_mask_from_lengths([5, 3, 0, 4], 5))

    def call(p, b, x):
        return torch.func.functional_call(base, (p, b), (x,),
                                          {"pad_mask": pad_mask})

    y = torch.func.vmap(call)(params, buffers, x)
    y.sum().backward()
    for i, member in enumerate(alone):
        y_i = member(x[i], pad_mask=pad_mask)
        y_i.sum().backward()
        close(y[i].detach(), y_i.detach())
        close(params["weight"].grad[i], member.weight.grad)
        torch.testing.assert_close(buffers["running_var"][i],
                                   member.running_var, rtol=1e-10, atol=1e-12)
