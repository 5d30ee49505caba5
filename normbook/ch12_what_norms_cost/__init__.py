"""Chapter 12, "What norms cost": two modules, one per half of the chapter.

`costs`: memory traffic, memory kept for backward, BatchNorm folded away,
whole training steps and fine-tuning at a small batch. `numerics`: three ways
to compute a variance in float32, and norms in bfloat16.
"""
from normbook.ch12_what_norms_cost.costs import (
    PASSES,
    bandwidth_bound,
    count_traffic,
    finetune_bn,
    fold_bn,
    fold_tiny_cnn,
    memory_bandwidth,
    saved_bytes,
    transformer_step_times,
)
from normbook.ch12_what_norms_cost.numerics import (
    VARIANCES,
    autocast_dtypes,
    bf16_errors,
    low_precision_layer_norm,
    offset_rows,
    one_pass_var,
    torch_norm_errors,
    two_pass_var,
    variance_errors,
    welford_var,
)

__all__ = [
    "PASSES", "bandwidth_bound", "count_traffic", "finetune_bn", "fold_bn",
    "fold_tiny_cnn", "memory_bandwidth", "saved_bytes",
    "transformer_step_times", "VARIANCES", "autocast_dtypes", "bf16_errors",
    "low_precision_layer_norm", "offset_rows", "one_pass_var",
    "torch_norm_errors", "two_pass_var", "variance_errors", "welford_var"]
