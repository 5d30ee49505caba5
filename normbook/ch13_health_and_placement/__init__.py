"""Chapter 13, "A network's health, and a norm's place": the networks
(`models`) and the runs (`runs`)."""
from normbook.ch13_health_and_placement.models import (
    ACTIVATIONS,
    CenteredMLP,
    DetachedBatchNorm1d,
    DropoutMLP,
    ProbeMLP,
)
from normbook.ch13_health_and_placement.runs import (
    RUNS,
    bn_input_variances,
    detached_run,
    dropout_run,
    health_at_init,
    health_run,
    placement_run,
    predicted_shift,
    run,
)

__all__ = [
    "ACTIVATIONS", "CenteredMLP", "DetachedBatchNorm1d", "DropoutMLP",
    "ProbeMLP", "RUNS", "bn_input_variances", "detached_run", "dropout_run",
    "health_at_init", "health_run", "placement_run", "predicted_shift",
    "run"]
