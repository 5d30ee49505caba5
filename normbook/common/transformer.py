"""The book's tiny Transformer: self-attention, a block with its norms placed
"pre", "post" or "peri", and the model, whose settings are a dataclass.

Every norm comes from `normbook.common.models.make_norm` (so from
`normlib.nn`), and every norm module takes `forward(x, pad_mask=None)`: only
BatchNorm uses the padding mask (unless built with bn_mask=False).
"""
import dataclasses
import math

import torch
from torch import nn

from normbook.common.models import SEQUENCE_NORMS, make_norm

PLACEMENTS = ("pre", "post", "peri")
INITS = ("torch", "fan_in")
QK_NORMS = (None, "ln", "rms")


def check_attention(d_model, n_heads, qk_norm):
    """Refuse heads that do not split d_model evenly, or an unknown qk_norm."""
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by "
                         f"n_heads={n_heads}")
    if qk_norm not in QK_NORMS:
        raise ValueError(f"qk_norm must be one of {QK_NORMS}, "
                         f"got {qk_norm!r}")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The settings of a `TinyTransformer`; `TinyTransformer(vocab_size,
    **settings)` takes them as keyword arguments."""

    vocab_size: int            # tokens the embedding knows
    d_model: int = 64          # width of the residual stream
    n_heads: int = 4           # attention heads; they split d_model evenly
    n_layers: int = 2          # blocks
    max_len: int = 128         # longest sequence (learned positions)
    norm: str = "ln"           # one of models.SEQUENCE_NORMS, in every block
    placement: str = "pre"     # "pre": x + f(norm(x)); "post": norm(x + f(x));
    #                            "peri": x + norm(f(norm(x)))
    causal: bool = False       # attend only to earlier positions (an LM)
    num_classes: int | None = None  # None: next-token logits per position;
    #                            else class logits of the mean real token
    dropout: float = 0.0       # on attention weights and the MLP's output
    bn_mask: bool = True       # False: BatchNorm's statistics include pads
    trim_padding: bool = False  # cut a padded batch to its longest sequence
    init: str = "torch"        # "torch": torch.nn's default init of the
    #                            blocks' Linear layers, uniform with variance
    #                            1/(3 fan_in); "fan_in": N(0, 1/fan_in) and
    #                            zero biases, Xiong et al.'s scale
    qk_norm: str | None = None  # None, "ln" or "rms": normalize q and k over
    #                            each head's features (QK-norm)

    def __post_init__(self):
        for name, allowed in (("norm", SEQUENCE_NORMS),
                              ("placement", PLACEMENTS), ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        check_attention(self.d_model, self.n_heads, self.qk_norm)


class SelfAttention(nn.Module):
    """Multi-head self-attention that never attends to padded keys (and, if
    causal, to the future).

    The softmax(q k^T / sqrt(D)) v step runs as torch's fused
    `scaled_dot_product_attention`; fused=False spells it out (torch.func.vmap
    has no batching rule for the fused kernel). qk_norm="ln" or "rms"
    normalizes q and k over the head dimension first (QK-norm, Dehghani et
    al.). record: set it to a list and every call (spelled out) appends
    (max logit, mean attention entropy).
    """

    def __init__(self, d_model, n_heads, causal=False, dropout=0.0,
                 qk_norm=None):
        super().__init__()
        check_attention(d_model, n_heads, qk_norm)
        self.n_heads, self.causal, self.dropout, self.fused = (
            n_heads, causal, dropout, True)
        self.qkv, self.proj = (nn.Linear(d_model, 3 * d_model),
                               nn.Linear(d_model, d_model))
        head_dim, self.record = d_model // n_heads, None
        self.q_norm, self.k_norm = ((make_norm(qk_norm, head_dim, "vector"),
                                     make_norm(qk_norm, head_dim, "vector"))
                                    if qk_norm else (None, None))

    def forward(self, x, pad_mask=None):
        B, T, C = x.shape                             # batch, time, channels
        q, k, v = (self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads)
                   .permute(2, 0, 3, 1, 4))               # each B, H, T, D
        if self.q_norm is not None:     # each (b, h, t) over its D features
            q, k = self.q_norm(q), self.k_norm(k)
        allowed = None                                    # None: every key
        if self.causal:
            allowed = torch.ones(T, T, dtype=torch.bool,
                                 device=x.device).tril()   # key <= query
        if pad_mask is not None:
            real = ~pad_mask[:, None, None, :]        # B, 1, 1, T: real keys
            allowed = real if allowed is None else allowed & real
        dropout = self.dropout if self.training else 0.0
        if self.fused and self.record is None:
            out = nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=None if pad_mask is None else allowed,
                is_causal=self.causal and pad_mask is None,
                dropout_p=dropout)                        # B, H, T, D
        else:
            scores = (q @ k.transpose(-2, -1)
                      / math.sqrt(q.shape[-1]))           # B, H, T, T
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            weights = scores.softmax(-1)                  # B, H, T, T
            # the largest logit; entropy in nats (0 log 0 = 0)
            if self.record is not None:
                entropy = -torch.special.xlogy(weights, weights).sum(-1).mean()
                self.record.append((scores.amax().item(), entropy.item()))
            out = nn.functional.dropout(weights, dropout) @ v   # B, H, T, D
        return self.proj(out.transpose(1, 2).reshape(B, T, C))  # B, T, C


class Block(nn.Module):
    """One Transformer block: attention then MLP, each in a residual branch
    with its norm, placed as `config.placement` says."""

    def __init__(self, config):
        super().__init__()
        c, d = config, config.d_model
        self.placement = c.placement
        self.norm1 = make_norm(c.norm, d, "sequence", c.bn_mask)
        self.norm2 = make_norm(c.norm, d, "sequence", c.bn_mask)
        self.attn = SelfAttention(d, c.n_heads, c.causal, c.dropout,
                                  c.qk_norm)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(),
                                 nn.Linear(4 * d, d), nn.Dropout(c.dropout))
        # each branch's second norm, on its output
        if self.placement == "peri":
            self.norm1_out = make_norm(c.norm, d, "sequence", c.bn_mask)
            self.norm2_out = make_norm(c.norm, d, "sequence", c.bn_mask)

    def forward(self, x, pad_mask=None):
        if self.placement == "pre":   # x + f(norm(x)): the residual stream
            #                           itself is never normalized
            x = x + self.attn(self.norm1(x, pad_mask), pad_mask)
            return x + self.mlp(self.norm2(x, pad_mask))
        if self.placement == "peri":  # x + norm(f(norm(x))): each branch
            #                           adds a normalized update
            update = self.attn(self.norm1(x, pad_mask), pad_mask)
            x = x + self.norm1_out(update, pad_mask)
            update = self.mlp(self.norm2(x, pad_mask))
            return x + self.norm2_out(update, pad_mask)
        x = self.norm1(x + self.attn(x, pad_mask), pad_mask)  # Post-LN
        return self.norm2(x + self.mlp(x), pad_mask)


class TinyTransformer(nn.Module):
    """A small Transformer: tokens (B, T) -> class logits (B, num_classes),
    or LM logits (B, T, vocab_size).

    `TinyTransformer(vocab_size, **settings)`: the settings are the fields of
    `TransformerConfig` (see there), kept as `model.config`. With
    trim_padding=True, each call with a pad_mask first cuts the batch to its
    longest sequence (dynamic padding; pads must sit at the end), so LM
    logits then cover only those positions.
    """

    def __init__(self, vocab_size, **settings):
        super().__init__()
        c = self.config = TransformerConfig(vocab_size, **settings)
        self.num_classes, self.trim_padding = c.num_classes, c.trim_padding
        self.tok_emb = nn.Embedding(vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.max_len, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        last = c.placement != "post"    # Pre- and Peri-LN end with a norm;
        #                                 Post-LN's last block already does
        self.norm_f = (make_norm(c.norm, c.d_model, "sequence", c.bn_mask)
                       if last else None)
        self.head = nn.Linear(c.d_model, c.num_classes or vocab_size)
        if c.init == "fan_in":   # each block adds about what the stream holds
            for block in self.blocks:
                for layer in block.modules():
                    if isinstance(layer, nn.Linear):
                        nn.init.normal_(layer.weight,
                                        std=layer.in_features ** -0.5)
                        nn.init.zeros_(layer.bias)

    def forward(self, tokens, pad_mask=None):
        if self.trim_padding and pad_mask is not None:
            width = int((~pad_mask).sum(1).max())   # the longest sequence
            tokens, pad_mask = tokens[:, :width], pad_mask[:, :width]
        B, T = tokens.shape                                   # batch, time
        positions = torch.arange(T, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)    # B, T, C
        for block in self.blocks:
            x = block(x, pad_mask)
        if self.norm_f is not None:
            x = self.norm_f(x, pad_mask)
        if self.num_classes is None:
            return self.head(x)                               # B, T, vocab
        if pad_mask is None:
            return self.head(x.mean(1))                       # B, classes
        valid = (~pad_mask).unsqueeze(-1).to(x.dtype)         # B, T, 1
        mean = (x * valid).sum(1) / valid.sum(1).clamp(min=1)  # real tokens
        return self.head(mean)
