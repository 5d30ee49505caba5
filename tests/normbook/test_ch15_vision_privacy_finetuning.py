"""normbook.ch15_vision_privacy_finetuning: the three LayerNorms, the
per-example gradients and the frozen backbone, each on a small case with a
known answer."""
import pytest
import torch
from torch import nn

from normbook.ch15_vision_privacy_finetuning import (
    RUNS,
    batch_grad,
    features,
    finetune_run,
    freeze_backbone,
    leak,
    loss_gradients,
    norm_parameters,
    per_example_grads,
    pretrain,
    relative_gap,
    run,
    running_stats,
    three_layernorms,
    tiny_cnn,
    train_head,
    two_tasks,
    without_running_stats,
)
from normbook.common.models import TinyCNN
from normlib.nn import BatchNorm2d, FrozenBatchNorm2d


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 8, 8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def test_layernorm2d_is_per_pixel_and_the_other_two_share_statistics():
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    out = {name: norm(x) for name, norm in three_layernorms(4, 5, 5).items()}
    per_pixel = ((x - x.mean(1, keepdim=True))
                 / (x.var(1, unbiased=False, keepdim=True) + 1e-6).sqrt())
    per_sample = ((x - x.mean((1, 2, 3), keepdim=True))
                  / (x.var((1, 2, 3), unbiased=False, keepdim=True)
                     + 1e-5).sqrt())
    torch.testing.assert_close(out["LayerNorm2d"], per_pixel)
    torch.testing.assert_close(out["GroupNorm(1, C)"], per_sample)
    torch.testing.assert_close(out["LayerNorm([C, H, W])"], per_sample)


def test_tiny_cnn_takes_a_layernorm_over_c_h_w_with_a_weight_per_value():
    model = tiny_cnn("ln_chw")
    assert model.norm1.norm.weight.shape == (16, 8, 8)
    assert model.norm2.norm.weight.shape == (32, 4, 4)
    assert norm_parameters(model) == 2 * (16 * 64 + 32 * 16)
    assert norm_parameters(tiny_cnn("ln2d")) == 2 * (16 + 32)
    assert model(batch()[0]).shape == (6, 10)


@pytest.mark.parametrize("kind", ["gn", "ln2d"])
def test_per_sample_norms_give_independent_per_example_gradients(kind):
    torch.manual_seed(0)
    model, (x, y) = TinyCNN(kind), batch()
    vmapped, within = per_example_grads(model, x, y), loss_gradients(model,
                                                                     x, y)
    assert vmapped.shape == (6, sum(p.numel() for p in model.parameters()))
    assert relative_gap(vmapped, within) < 1e-6
    assert relative_gap(vmapped.sum(0), batch_grad(model, x, y)) < 1e-5
    assert leak(model, x, y) < 1e-6


def test_train_mode_batchnorm_fails_under_grad_then_couples_the_batch():
    torch.manual_seed(0)
    model, (x, y) = TinyCNN("bn").train(), batch()
    with pytest.raises(RuntimeError, match="in-place operation"):
        per_example_grads(model, x, y)
    with pytest.raises(RuntimeError):       # N updates of one buffer
        per_example_grads(model, x, y, pass_buffers=True)
    patched = without_running_stats(model)
    assert model.norm1.norm.running_mean is not None       # a copy
    vmapped = per_example_grads(patched, x, y)
    # each example is its own batch of one
    alone = torch.cat([per_example_grads(patched, x[i:i + 1], y[i:i + 1])
                       for i in range(len(x))])
    assert relative_gap(vmapped, alone) < 1e-5
    full = batch_grad(patched, x, y)
    assert relative_gap(vmapped.sum(0), full) > 0.05
    # the real per-example terms add up, but depend on the other examples
    assert relative_gap(loss_gradients(patched, x, y).sum(0), full) < 1e-5
    assert leak(patched, x, y) > 1e-3


def test_eval_mode_batchnorm_behaves_like_a_per_sample_norm():
    torch.manual_seed(0)
    model, (x, y) = TinyCNN("bn"), batch()
    model(x)                                     # running statistics
    model.eval()
    vmapped = per_example_grads(model, x, y)
    assert relative_gap(vmapped.sum(0), batch_grad(model, x, y)) < 1e-5
    assert leak(model, x, y) < 1e-6
    # the buffers as an input of the mapped function: the same gradients
    passed = per_example_grads(model, x, y, pass_buffers=True)
    assert torch.equal(passed, vmapped)


def test_two_tasks_split_the_digits_into_0_4_and_5_9():
    tasks = two_tasks()
    for name in ("old", "new"):
        x_train, y_train, x_test, y_test = tasks[name]
        assert set(y_train.tolist()) == set(range(5))
        assert set(y_test.tolist()) <= set(range(5))
        assert len(x_train) == len(y_train) and len(x_test) == len(y_test)
    assert not torch.equal(tasks["old"][0][:5], tasks["new"][0][:5])


def test_requires_grad_alone_leaves_batchnorm_updating_frozen_bn_does_not():
    model = pretrain(0, steps=3)
    x, y = two_tasks()["new"][:2]
    moved = {}
    for how in ("requires_grad", "frozen_bn"):
        frozen = freeze_backbone(model, how)
        trainable = [n for n, p in frozen.named_parameters()
                     if p.requires_grad]
        assert trainable == ["head.weight", "head.bias"]
        kinds = {type(m) for m in frozen.modules()}
        assert (FrozenBatchNorm2d in kinds) == (how == "frozen_bn")
        assert (BatchNorm2d in kinds) == (how == "requires_grad")
        tuned = train_head(frozen, x, y, steps=3, batch_size=4, lr=1e-3,
                           seed=0)
        assert isinstance(tuned.head, nn.Linear)
        moved[how] = (running_stats(tuned) - running_stats(model)).abs()
        before, after = features(model, x[:8]), features(tuned, x[:8])
        assert (relative_gap(after, before) < 1e-5) == (how == "frozen_bn")
    assert moved["requires_grad"].max() > 0
    assert moved["frozen_bn"].max() == 0
    with pytest.raises(ValueError, match="how must be one of"):
        freeze_backbone(model, "eval")


def test_finetune_run_reports_every_freeze_and_batch_size():
    rows = run("finetune", seed=0, batch_sizes=(2,), steps=2, lr=1e-3,
               pretrain_steps=2)
    assert [(r["how"], r["batch_size"]) for r in rows] == [
        ("requires_grad", 2), ("frozen_bn", 2)]
    by_how = {r["how"]: r for r in rows}
    assert by_how["requires_grad"]["stats_moved"] > 0
    assert by_how["frozen_bn"]["stats_moved"] == 0
    for r in rows:
        assert 0 <= r["new_acc"] <= 1 and 0 <= r["old_acc"] <= 1
    assert set(RUNS) == {"cnn", "finetune"}
    assert RUNS["finetune"] is finetune_run


def test_cnn_runs_train_and_score_one_model_per_seed():
    results = run("cnn", kind="ln_chw", seeds=(0, 1), steps=3,
                  batch_size=8, lr=1e-3)
    assert [r["seed"] for r in results] == [0, 1]
    for result in results:
        assert result["kind"] == "ln_chw" and result["norm_params"] == 3072
        assert 0 <= result["test_acc"] <= 1 and result["test_loss"] > 0
    # the seeds start from different weights, so their losses differ
    assert results[0]["test_loss"] != results[1]["test_loss"]
