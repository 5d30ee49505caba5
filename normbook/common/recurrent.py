"""A recurrent network with a pluggable norm: the LSTM cell normalized the
ways Ba et al. (2016) and Cooijmans et al. (2016) normalize it.

`NormLSTM` runs one LSTM layer over (B, T, input_size). Each of its two gate
projections is normalized on its own, and so is the cell state on its way to
the output:

    i, f, g, o = N_x(W_x x_t) + N_h(W_h h_{t-1}) + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(N_c(c_t))

The recurrence of the cell itself, c_{t-1} -> c_t, is never normalized. The
norms `N`, all from `normlib.nn`:

- "none": the identity, and the cell is torch.nn.LSTM's (gates i, f, g, o);
- "ln": LayerNorm over each sample's features, at every step (Ba et al.);
- "bn": one BatchNorm1d per site, shared by every step: in training each
  step's batch gives the statistics, in eval one running estimate serves
  every step;
- "bn_step": statistics per site and per step, one BatchNorm1d each
  (Cooijmans et al.): step t keeps its own running statistics, a step past
  the last one built reuses the last one's, and the scale is shared by all.

Every site has one scale (and N_c one shift) for all steps. N_x and N_h
have no shift of their own: b is the shift. A BatchNorm's scale
starts at `gamma_init` (0.1, Cooijmans et al.'s choice), LayerNorm's at 1.
"""
import torch
from torch import nn

from normlib.nn import BatchNorm1d, LayerNorm

RNN_NORMS = ("none", "ln", "bn", "bn_step")
SITES = ("x", "h", "c")   # the input projection, the recurrent one, the cell


class SiteNorm(nn.Module):
    """The norm at one site of the cell: its statistics (one set, or one per
    step for "bn_step"), then one scale (and shift) shared by every step.

    Cooijmans et al. keep statistics per step but not parameters: "we
    separate *only* the statistics over time and not the gamma and beta
    parameters" (their footnote 1).

    - `kind`: "ln", "bn" or "bn_step".
    - `features`: the size of the vector it normalizes.
    - `shift`: whether it learns a shift (beta, zeros) beside its scale.
    - `gamma_init`: the scale's initial value.
    - `copies`: how many sets of statistics ("bn_step": one per step).
    """

    def __init__(self, kind, features, shift, gamma_init, copies=1):
        super().__init__()
        self.kind = kind
        self.stats = nn.ModuleList(
            LayerNorm(features, elementwise_affine=False) if kind == "ln"
            else BatchNorm1d(features, affine=False) for _ in range(copies))
        self.weight = nn.Parameter(torch.full((features,), gamma_init))
        self.bias = nn.Parameter(torch.zeros(features)) if shift else None

    def forward(self, z, t, pad=None):
        """z (B, features) at step t; pad (B,) True at padding, or None."""
        if self.kind == "bn_step" and t >= len(self.stats) and self.training:
            raise ValueError(f"step {t} is past max_steps={len(self.stats)}: "
                             "bn_step has no statistics to train there")
        norm = self.stats[min(t, len(self.stats) - 1)]
        zhat = norm(z) if self.kind == "ln" else norm(z, pad)
        return (zhat * self.weight if self.bias is None
                else zhat * self.weight + self.bias)


class NormLSTM(nn.Module):
    """One LSTM layer, (B, T, input_size) -> (outputs (B, T, H), last h).

    - `input_size`, `hidden_size`: the features of x_t and of h_t (H).
    - `norm`: one of RNN_NORMS (see the module's docstring).
    - `max_steps`: for "bn_step", the steps that get their own statistics;
      training on a longer sequence is refused.
    - `gamma_init`: the initial scale of every BatchNorm.

    forward(x, pad_mask=None): pad_mask (B, T) is True at padding; a padded
    step leaves that sequence's state as it was and stays out of
    BatchNorm's statistics, so the last h is each sequence's own last step.
    """

    def __init__(self, input_size, hidden_size, norm="none", max_steps=None,
                 gamma_init=0.1):
        super().__init__()
        if norm not in RNN_NORMS:
            raise ValueError(f"norm must be one of {RNN_NORMS}, got {norm!r}")
        if norm == "bn_step" and not max_steps:
            raise ValueError("norm='bn_step' needs max_steps, the number of "
                             "steps that get their own statistics")
        H = self.hidden_size = hidden_size
        self.kind, self.max_steps = norm, max_steps
        self.weight_x = nn.Parameter(torch.empty(4 * H, input_size))
        self.weight_h = nn.Parameter(torch.empty(4 * H, H))
        self.bias = nn.Parameter(torch.empty(4 * H))
        for p in (self.weight_x, self.weight_h, self.bias):   # torch's init
            nn.init.uniform_(p, -H ** -0.5, H ** -0.5)
        copies = max_steps if norm == "bn_step" else 1
        scale = 1.0 if norm == "ln" else gamma_init
        for site, features, shift in (("x", 4 * H, False),
                                      ("h", 4 * H, False), ("c", H, True)):
            setattr(self, f"norm_{site}", None if norm == "none" else
                    SiteNorm(norm, features, shift, scale, copies))

    def _normalize(self, site, t, z, pad):
        """N_site at step t of z (B, features); pad (B,) or None."""
        norm = getattr(self, f"norm_{site}")
        return z if norm is None else norm(z, t, pad)

    def step(self, x_t, state, t, pad=None):
        """One step: x_t (B, input_size), state (h, c) or None at the start,
        t the step's index -> the new (h, c). pad (B,) is True where x_t is
        padding: those sequences keep their state."""
        if state is None:
            state = (x_t.new_zeros(len(x_t), self.hidden_size),) * 2
        h, c = state
        gates = (self._normalize("x", t, x_t @ self.weight_x.T, pad)
                 + self._normalize("h", t, h @ self.weight_h.T, pad)
                 + self.bias)                                   # B, 4H
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(
            self._normalize("c", t, c_new, pad))
        if pad is None:
            return h_new, c_new
        keep = pad.unsqueeze(1)         # a finished sequence keeps its state
        return h.where(keep, h_new), c.where(keep, c_new)

    def forward(self, x, pad_mask=None):
        B, T, _ = x.shape                   # batch, steps, input features
        state, outputs = None, []
        for t in range(T):
            pad = None if pad_mask is None else pad_mask[:, t]
            state = self.step(x[:, t], state, t, pad)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1), state[0]


class LSTMClassifier(nn.Module):
    """A NormLSTM read by a linear head at its last step:
    (B, T, input_size) -> (B, num_classes) logits. Arguments as NormLSTM."""

    def __init__(self, input_size, hidden_size, num_classes, norm="none",
                 max_steps=None, gamma_init=0.1):
        super().__init__()
        self.lstm = NormLSTM(input_size, hidden_size, norm, max_steps,
                             gamma_init)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x, pad_mask=None):
        return self.head(self.lstm(x, pad_mask)[1])


class LSTMLanguageModel(nn.Module):
    """Tokens (B, T) -> next-token logits (B, T, vocab_size): an embedding of
    `d_model` features, a NormLSTM, a linear head at every step."""

    def __init__(self, vocab_size, d_model, hidden_size, norm="none",
                 max_steps=None, gamma_init=0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.lstm = NormLSTM(d_model, hidden_size, norm, max_steps,
                             gamma_init)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, pad_mask=None):
        return self.head(self.lstm(self.embed(tokens), pad_mask)[0])

    def step(self, token, state, t):
        """Streaming: one token per sequence, token (B,) at step t, state as
        NormLSTM.step's -> (next-token logits (B, vocab_size), state)."""
        state = self.lstm.step(self.embed(token), state, t)
        return self.head(state[0]), state
