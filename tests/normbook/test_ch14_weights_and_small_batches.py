"""normbook.ch14_weights_and_small_batches: the training loop's decay and
records, Batch Renormalization's schedule, the invariance check and the
runs' bookkeeping (the chapter runs the experiments themselves)."""
import copy
import math

import pytest
import torch

from normbook.ch14_weights_and_small_batches import (
    RUNS,
    invariance_check,
    norm_parameter_names,
    renorm_limits,
    run,
    small_batch_run,
    train_members,
)
from normbook.common.models import TinyMLP
from normbook.common.train import set_seed


def data(n=64):
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(n, 1, 8, 8, generator=generator),
            torch.randint(0, 10, (n,), generator=generator))


def test_renorm_limits_follow_ioffes_milestones_at_the_same_fractions():
    steps = 1600                     # the paper's 160k steps, divided by 100
    assert renorm_limits(0, steps) == (1.0, 0.0)
    assert renorm_limits(50, steps) == (1.0, 0.0)         # 5k: still BN
    rmax, dmax = renorm_limits(250, steps)                 # 25k
    assert dmax == 5.0 and 1 < rmax < 3
    assert renorm_limits(400, steps) == (3.0, 5.0)         # 40k
    assert renorm_limits(steps - 1, steps) == (3.0, 5.0)
    # linear in between: halfway from 5k to 40k, rmax is halfway to 3
    assert renorm_limits(225, steps)[0] == pytest.approx(2.0)


def test_norm_parameter_names_are_the_gammas_and_betas():
    assert norm_parameter_names(TinyMLP("bn")) == {
        "norm1.norm.weight", "norm1.norm.bias",
        "norm2.norm.weight", "norm2.norm.bias"}
    assert norm_parameter_names(TinyMLP("none")) == set()


def test_train_members_is_torch_sgd_with_weight_decay_per_group():
    """One member, decay on all but the norms: the same weights as
    torch.optim.SGD with two parameter groups."""
    x, y = data()
    set_seed(0)
    model = TinyMLP("bn")
    reference = copy.deepcopy(model)
    names = norm_parameter_names(model)
    params = dict(reference.named_parameters())
    optimizer = torch.optim.SGD(
        [{"params": [p for n, p in params.items() if n not in names],
          "weight_decay": 0.1},
         {"params": [p for n, p in params.items() if n in names],
          "weight_decay": 0.0}], lr=0.05, momentum=0.9)
    ensemble, record = train_members(
        [model], x, y, steps=3, batch_size=16, lr=0.05, seeds=[0],
        momentum=0.9, decay=[0.1], decay_norms=[False])
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=generator)   # index_stream's
    for step in range(3):
        index = order[16 * step:16 * (step + 1)]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference(x[index]),
                                                 y[index])
        loss.backward()
        optimizer.step()
        assert record["loss"][0, step].item() == pytest.approx(
            loss.item(), rel=1e-5)
    trained = ensemble.member(0, TinyMLP("bn"))
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name],
                                   rtol=1e-5, atol=1e-6)


def test_decay_shrinks_a_scale_invariant_weight_and_the_angle_is_recorded():
    x, y = data()
    models = []
    for _ in range(2):
        set_seed(0)
        models.append(TinyMLP("bn"))
    start = models[0].fc1.weight.norm().item()
    _, record = train_members(models, x, y, steps=20, batch_size=16, lr=0.1,
                              seeds=[0, 0], decay=[0.0, 0.5],
                              watch=("fc1.weight",))
    norms, angles = record["fc1.weight"]["norm"], record["fc1.weight"]["angle"]
    assert norms[0, 0].item() == pytest.approx(start)
    # no decay: the gradient is orthogonal to w, so |w| only grows
    assert (norms[0].diff() > -1e-6 * start).all()
    # decay 0.5 at lr 0.1: shrinks by about 0.95 per step
    assert norms[1, -1] < 0.5 * norms[0, -1]
    assert (angles > 0).all() and (angles < 0.5).all()


def test_invariance_check_on_a_norm_and_without_one():
    x, y = data()
    set_seed(0)
    normed = invariance_check(TinyMLP("bn"), x, y)
    for values in normed.values():
        assert values["cosine"] < 1e-3
        assert values["ratio"] == pytest.approx(1, abs=1e-3)
    set_seed(0)
    plain = TinyMLP("none")
    before = copy.deepcopy(plain.state_dict())
    # without a norm the weights are not scale-invariant
    unnormed = invariance_check(plain, x, y)
    assert unnormed["fc2.weight"]["cosine"] > 1e-2
    assert abs(unnormed["fc2.weight"]["ratio"] - 1) > 0.1
    for name, value in plain.state_dict().items():      # left as it was
        torch.testing.assert_close(value, before[name])


def test_small_batch_run_returns_every_seed():
    results = small_batch_run(model="mlp", variant="brn", batch_size=128,
                              seeds=(0, 1), epochs=1)
    assert [r["seed"] for r in results] == [0, 1]
    assert all(0 <= r["acc"] <= 1 and math.isfinite(r["loss_last"])
               for r in results)
    assert results[0]["steps"] == 1348 // 128


def test_decay_runs_report_every_arm_and_seed():
    dynamics = run("dynamics", seeds=(0, 1), steps=4, lr=0.1, decay=0.05)
    assert [(r["arm"], r["seed"]) for r in dynamics] == [
        (arm, seed) for arm in ("none", "all", "no_norms") for seed in (0, 1)]
    for r in dynamics:
        assert len(r["fc2.weight"]["angle"]) == len(r["fc1.weight"]["norm"])
        assert set(r["gamma"]) == {"norm1.norm.weight", "norm2.norm.weight"}
    # the arms without decay on the norms keep gamma where it started
    untouched = [r["gamma"]["norm1.norm.weight"] for r in dynamics
                 if r["arm"] != "all"]
    decayed = [r["gamma"]["norm1.norm.weight"] for r in dynamics
               if r["arm"] == "all"]
    assert max(decayed) < min(untouched)
    recipe = run("recipe", seeds=(0,), decay=0.1, epochs=1)
    assert [r["arm"] for r in recipe] == ["all", "no_norms"]
    assert recipe[0]["gamma2"] < recipe[1]["gamma2"]


def test_run_dispatches_and_tags_its_experiment():
    assert set(RUNS) == {"dynamics", "recipe", "small_batch"}
    results = run("small_batch", model="cnn", variant="ws", batch_size=256,
                  seeds=(0,), epochs=1)
    assert results[0]["experiment"] == "small_batch"
    with pytest.raises(KeyError):
        run("nothing")


def test_the_renorm_schedule_reaches_the_batched_model():
    """Batch Renorm held at rmax=1, dmax=0 trains exactly as BatchNorm; at
    its default bounds it does not (so the schedule is what it runs)."""
    x, y = data()

    def trained(norm, renorm):
        set_seed(0)
        model = TinyMLP(norm)
        _, record = train_members([model], x, y, steps=6, batch_size=4,
                                  lr=0.1, seeds=[0], renorm=renorm)
        return record["loss"][0]

    batchnorm = trained("bn", None)
    torch.testing.assert_close(trained("brn", lambda step: (1.0, 0.0)),
                               batchnorm)
    assert not torch.allclose(trained("brn", None), batchnorm)
