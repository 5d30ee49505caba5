"""Chapter 15, "Vision's LayerNorm, per-example gradients and frozen
BatchNorm": one module per part of the chapter.

`vision`: the three LayerNorms of an image and the CNN runs that compare
them. `privacy`: per-example gradients with torch.func and how BatchNorm's
batch statistics couple them. `finetuning`: a backbone meant to stay frozen
under a new head, frozen by requires_grad or by FrozenBatchNorm2d.
"""
from normbook.ch15_vision_privacy_finetuning.finetuning import (
    FREEZES,
    features,
    finetune_run,
    freeze_backbone,
    pretrain,
    running_stats,
    train_head,
    two_tasks,
)
from normbook.ch15_vision_privacy_finetuning.privacy import (
    batch_grad,
    leak,
    loss_gradients,
    per_example_grads,
    relative_gap,
    without_running_stats,
)
from normbook.ch15_vision_privacy_finetuning.vision import (
    CNN_KINDS,
    KIND_LABELS,
    cnn_runs,
    norm_parameters,
    three_layernorms,
    tiny_cnn,
)

__all__ = [
    "FREEZES", "features", "finetune_run", "freeze_backbone", "pretrain",
    "running_stats", "train_head", "two_tasks", "batch_grad", "leak",
    "loss_gradients", "per_example_grads", "relative_gap",
    "without_running_stats", "CNN_KINDS", "KIND_LABELS", "cnn_runs",
    "norm_parameters", "three_layernorms", "tiny_cnn", "RUNS", "run"]

RUNS = {"cnn": cnn_runs, "finetune": finetune_run}


def run(experiment, **settings):
    """One run of the chapter's experiments, RUNS[experiment](**settings):
    both kinds go through one pool of workers
    (`normbook.common.parallel.run_all`)."""
    return RUNS[experiment](**settings)
