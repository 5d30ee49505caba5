"""normbook.ch09_why_bn_works: the deep MLP, ICS, smoothness, the sweeps."""
import copy
import math

import torch
import torch.nn.functional as F

import normbook.ch09_why_bn_works as bt
from normbook.common.train import set_seed


def batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 8, 8, generator=g),
            torch.randint(10, (n,), generator=g))


def test_deep_mlp_shapes_and_he_init_keeps_scale():
    set_seed(0)
    x, _ = batch(256)
    for norm in ("none", "bn"):
        for residual in (False, True):
            assert bt.DeepMLP(3, 16, norm, residual)(x).shape == (256, 10)
    he = bt.DeepMLP(30, 128, "none", init="he")
    default = bt.DeepMLP(30, 128, "none", init="torch")
    h_he, h_default = he.inp(x.flatten(1)), default.inp(x.flatten(1))
    for lin_he, lin_default in zip(he.linears, default.linears):
        h_he = torch.relu(lin_he(h_he))
        h_default = torch.relu(lin_default(h_default))
    assert 0.1 < h_he.pow(2).mean() < 10     # He: the scale survives 30 layers
    assert h_default.pow(2).mean() < 1e-2    # nn.Linear's default: it shrinks


def test_noise_changes_the_output_and_is_resampled():
    set_seed(0)
    model, (x, _) = bt.DeepMLP(2, 8, "bn"), batch()
    plain = model(x)
    gen = torch.Generator().manual_seed(0)
    model.noise = bt.sample_noise(2, 8, gen)
    first = model(x)
    model.noise = bt.sample_noise(2, 8, gen)
    assert not torch.allclose(plain, first)
    assert not torch.allclose(first, model(x))
    scale, shift = model.noise[0]
    assert scale.min() >= 0.5 and scale.max() <= 2.0
    assert shift.abs().max() <= 1.0


def test_upstream():
    assert bt._upstream("inp.weight", 0) and bt._upstream("norms.1.bias", 2)
    assert not bt._upstream("linears.2.weight", 2)
    assert not bt._upstream("head.weight", 5)


def test_ics_is_zero_without_a_step_and_matches_a_manual_update():
    set_seed(0)
    model, (x, y) = bt.DeepMLP(3, 8, "bn"), batch()
    running = model.norms[0].norm.running_mean.clone()
    zero = bt.ics(model, x, y, lr=0.0, layers=[0, 2])
    assert all(d < 1e-7 and c > 1 - 1e-6 for d, c in zero)
    [(dist, cos)] = bt.ics(model, x, y, lr=0.5, layers=[2])
    # the measurement leaves BN's statistics alone
    assert torch.equal(model.norms[0].norm.running_mean, running)

    def grad(m):
        return torch.autograd.grad(F.cross_entropy(m(x), y),
                                   m.linears[2].weight)[0]

    g = grad(model)
    moved = copy.deepcopy(model)
    grads = torch.autograd.grad(F.cross_entropy(moved(x), y),
                                list(moved.parameters()))
    with torch.no_grad():
        for (name, p), dp in zip(moved.named_parameters(), grads):
            if bt._upstream(name, 2):
                p -= 0.5 * dp
    g2 = grad(moved)
    assert dist > 1e-4
    assert math.isclose(dist, (g - g2).norm().item(), rel_tol=1e-4)
    cosine = F.cosine_similarity(g.flatten(), g2.flatten(), dim=0).item()
    assert math.isclose(cos, cosine, rel_tol=1e-4)


def test_smoothness_of_tiny_steps_is_tiny_and_beta_matches_its_definition():
    set_seed(0)
    model, (x, y) = bt.DeepMLP(2, 8, "none"), batch()
    loss_range, change, beta = bt.smoothness(model, x, y, [1e-6])
    assert loss_range < 1e-3 and change < 1e-3
    loss_range, change, beta = bt.smoothness(model, x, y, [0.1])
    g = torch.autograd.grad(F.cross_entropy(model(x), y),
                            list(model.parameters()))
    norm = torch.sqrt(sum(v.pow(2).sum() for v in g)).item()
    assert math.isclose(beta, change / (0.1 * norm), rel_tol=1e-5)
    assert loss_range > 0


def test_init_grad_norms_vanish_without_bn_and_explode_with_it():
    kw = dict(seed=0, depth=20, width=32)
    default = bt.init_grad_norms(norm="none", init="torch", **kw)
    bn = bt.init_grad_norms(norm="bn", **kw)
    assert len(bn) == 20
    assert default[0] / default[-1] < 1e-3 and bn[0] / bn[-1] > 10


def test_lr_sweep_marks_divergence():
    runs = bt.lr_sweep(norm="none", lrs=[1e-3, 1e3], seeds=[0], depth=3,
                       width=8, steps=25)
    assert [r["lr"] for r in runs] == [1e-3, 1e3]
    # ln 10 = 2.3: chance
    assert runs[0]["final_loss"] < 2.5 and runs[1]["final_loss"] > 10


def test_measured_run_records():
    out = bt.measured_run(norm="bn", seed=0, depth=3, width=8, steps=6,
                          measure_every=3, layers=(1, 2), noise=(1.0, 2.0))
    assert len(out["train_loss"]) == 6 and out["measure_step"] == [0, 3]
    assert len(out["ics_l2"][0]) == 2 and len(out["beta"]) == 2
