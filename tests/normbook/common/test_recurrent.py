"""normbook.common.recurrent: the LSTM with a pluggable norm."""
import pytest
import torch

from normbook.common.recurrent import (
    RNN_NORMS,
    LSTMClassifier,
    LSTMLanguageModel,
    NormLSTM,
)

F64 = torch.float64


def test_without_a_norm_it_is_torchs_lstm():
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 5, batch_first=True).double()
    ours = NormLSTM(3, 5).double()
    with torch.no_grad():
        ours.weight_x.copy_(theirs.weight_ih_l0)
        ours.weight_h.copy_(theirs.weight_hh_l0)
        ours.bias.copy_(theirs.bias_ih_l0 + theirs.bias_hh_l0)
    x = torch.randn(4, 6, 3, dtype=F64)
    outputs, (h, _) = theirs(x)
    mine, last = ours(x)
    torch.testing.assert_close(mine, outputs)
    torch.testing.assert_close(last, h[0])


def test_layer_norm_lstm_treats_each_sequence_alone():
    torch.manual_seed(0)
    lstm = NormLSTM(3, 5, "ln").double()
    x = torch.randn(4, 6, 3, dtype=F64)
    alone = torch.cat([lstm(x[b:b + 1])[0] for b in range(4)])
    torch.testing.assert_close(lstm(x)[0], alone)
    assert lstm.norm_x.bias is None and lstm.norm_c.bias is not None
    assert torch.equal(lstm.norm_x.weight, torch.ones(20, dtype=F64))


def test_shared_bn_is_one_module_per_site_called_at_every_step():
    lstm = NormLSTM(3, 5, "bn")
    lstm(torch.randn(8, 6, 3))
    for site in ("x", "h", "c"):
        norms = getattr(lstm, f"norm_{site}").stats
        assert len(norms) == 1 and int(norms[0].num_batches_tracked) == 6
    assert torch.equal(lstm.norm_h.weight, torch.full((20,), 0.1))


def test_per_step_bn_keeps_a_statistic_per_step_and_reuses_the_last():
    torch.manual_seed(0)
    lstm = NormLSTM(3, 5, "bn_step", max_steps=4)
    x = torch.randn(8, 4, 3) + torch.arange(4.0).view(1, 4, 1)  # steps differ
    lstm(x)
    means = torch.stack([norm.running_mean for norm in lstm.norm_x.stats])
    assert len(lstm.norm_x.stats) == 4 and means.std(0).max() > 0.01
    assert all(int(norm.num_batches_tracked) == 1
               for norm in lstm.norm_x.stats)
    # statistics per step, but one scale for all steps (Cooijmans et al.)
    assert lstm.norm_x.weight.shape == (20,)
    lstm.eval()
    longer = torch.cat([x, x[:, -1:].expand(8, 3, 3)], dim=1)  # 7 steps
    assert lstm(longer)[0].shape == (8, 7, 5)
    lstm.train()
    with pytest.raises(ValueError, match="max_steps=4"):
        lstm(longer)


@pytest.mark.parametrize("norm", RNN_NORMS)
def test_padding_keeps_the_state_and_stays_out_of_the_statistics(norm):
    torch.manual_seed(0)
    lstm = NormLSTM(3, 5, norm, max_steps=6).double()
    x = torch.randn(4, 6, 3, dtype=F64)
    pad = torch.zeros(4, 6, dtype=torch.bool)
    pad[0, 3:], pad[2, 5:] = True, True               # two shorter sequences
    junk = x.masked_fill(pad.unsqueeze(-1), 1e6)      # whatever the pads hold
    outputs, last = lstm(x, pad)
    torch.testing.assert_close(lstm(junk, pad)[0], outputs)
    torch.testing.assert_close(last[0], outputs[0, 2])  # its own last step
    torch.testing.assert_close(outputs[0, 5], outputs[0, 2])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="norm must be one of"):
        NormLSTM(3, 5, "gn")
    with pytest.raises(ValueError, match="max_steps"):
        NormLSTM(3, 5, "bn_step")


@pytest.mark.parametrize("norm", RNN_NORMS)
def test_models_shapes_and_gradients(norm):
    torch.manual_seed(0)
    classifier = LSTMClassifier(1, 8, 10, norm, max_steps=16)
    logits = classifier(torch.randn(4, 16, 1))
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in classifier.parameters())
    lm = LSTMLanguageModel(12, 6, 8, norm, max_steps=16)
    assert lm(torch.randint(0, 12, (4, 16))).shape == (4, 16, 12)
