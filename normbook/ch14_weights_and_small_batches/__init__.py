"""Chapter 14, "Weight decay, normalized weights and small batches": three
modules.

`training`: the loop every run uses (many small models as one batched model,
SGD with per-member weight decay, the weights' norm and angular step per
step, Batch Renormalization's schedule). `decay`: weight decay on the
weights that feed a BatchNorm, and the recipe of no decay on gamma and
beta. `small_batches`: chapter 4's small-batch sweep for Batch
Renormalization, Weight Standardization with GroupNorm and Weight
Normalization.
"""
from normbook.ch14_weights_and_small_batches.decay import (
    ARMS,
    WATCHED,
    decay_dynamics_run,
    decay_recipe_run,
    invariance_check,
)
from normbook.ch14_weights_and_small_batches.small_batches import (
    VARIANTS,
    small_batch_run,
)
from normbook.ch14_weights_and_small_batches.training import (
    RENORM_SCHEDULE,
    norm_parameter_names,
    renorm_limits,
    train_members,
)

__all__ = ["RUNS", "run", "ARMS", "WATCHED", "decay_dynamics_run",
           "decay_recipe_run", "invariance_check", "VARIANTS",
           "small_batch_run", "RENORM_SCHEDULE", "norm_parameter_names",
           "renorm_limits", "train_members"]

RUNS = {"dynamics": decay_dynamics_run, "recipe": decay_recipe_run,
        "small_batch": small_batch_run}


def run(experiment, **config):
    """RUNS[experiment](**config), tagged with its experiment: one entry
    point for `normbook.common.parallel.run_all`."""
    return [dict(result, experiment=experiment)
            for result in RUNS[experiment](**config)]
