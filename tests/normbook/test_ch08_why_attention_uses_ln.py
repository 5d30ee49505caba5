"""normbook.ch08_why_attention_uses_ln: W_FC2's gradients, the LM's modes."""
import math

import pytest

from normbook.ch08_why_attention_uses_ln import fc2_grad_norms, lm_mode_losses


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_fc2_grad_norms(placement):
    shape = dict(d_model=8, n_heads=2, placement=placement)
    norms = fc2_grad_norms(seed=0, n_layers=3, batches=2, **shape)
    assert len(norms) == 3 and all(value > 0 for value in norms)
    assert norms == fc2_grad_norms(seed=0, n_layers=3, batches=2, **shape)


def test_lm_mode_losses_are_three_finite_losses():
    losses = lm_mode_losses(seed=0, steps=4, batch_size=4, lr=1e-3,
                            context=16, scored=4, d_model=8, n_heads=2,
                            n_layers=1, norm="bn")
    assert len(losses) == 3
    assert all(isinstance(loss, float) and math.isfinite(loss)
               for loss in losses)
