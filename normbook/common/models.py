"""The two tiny models of Part II, a CNN for 8x8 digits and a Transformer, each with a pluggable norm.

Every norm comes from `normlib.nn` (never torch.nn's), made by `make_norm`, and
every norm module takes `forward(x, pad_mask=None)` so a model can hand the
padding mask to all of them; only BatchNorm uses it (unless built with bn_mask=False).
"""
import math

import torch
from torch import nn

from normlib.nn import (BatchNorm1d, BatchNorm2d, DyT, GroupNorm, ImageRMSNorm, LayerNorm, RMSNorm,
                        SequenceBatchNorm)

NORMS = ("bn", "ln", "rms", "gn", "none")
SEQUENCE_NORMS = NORMS + ("dyt",)   # DyT (no statistics) is built for (B, T, C) only
PLACEMENTS = ("pre", "post", "peri")


def num_groups(channels, max_groups=8):
    """The largest group count <= max_groups that divides `channels` (GroupNorm's groups)."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


class IgnoreMask(nn.Module):
    """Wraps a norm that needs no padding mask so that it accepts one and ignores it."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x, pad_mask=None):
        return self.norm(x)


class TokenGroupNorm(nn.Module):
    """GroupNorm for (B, T, C): each token's C features split into groups, normalized per group."""

    def __init__(self, groups, channels):
        super().__init__()
        self.norm = GroupNorm(groups, channels)

    def forward(self, x, pad_mask=None):
        B, T, C = x.shape                                      # batch, time, channels
        return self.norm(x.reshape(B * T, C)).reshape(B, T, C)  # every token is a "sample" of GroupNorm


def make_norm(kind, channels, layout, bn_mask=True):
    """A norm module of `kind` (one of NORMS) for layout "image" (N, C, H, W), "vector" (N, C) or "sequence" (B, T, C).

    bn_mask=False makes a sequence BatchNorm ignore pad_mask: pads then enter its statistics (unmasked BN).
    """
    allowed = SEQUENCE_NORMS if layout == "sequence" else NORMS
    if kind not in allowed:
        raise ValueError(f"kind must be one of {allowed} for layout {layout!r}, got {kind!r}")
    if layout == "image":
        made = {"bn": lambda: IgnoreMask(BatchNorm2d(channels)),
                "ln": lambda: IgnoreMask(GroupNorm(1, channels)),   # LayerNorm over (C, H, W) of each sample
                "gn": lambda: IgnoreMask(GroupNorm(num_groups(channels), channels)),
                "rms": lambda: IgnoreMask(ImageRMSNorm(channels)),
                "none": lambda: IgnoreMask(nn.Identity())}
    elif layout == "vector":
        made = {"bn": lambda: IgnoreMask(BatchNorm1d(channels)),
                "ln": lambda: IgnoreMask(LayerNorm(channels)),
                "gn": lambda: IgnoreMask(GroupNorm(num_groups(channels), channels)),
                "rms": lambda: IgnoreMask(RMSNorm(channels)),
                "none": lambda: IgnoreMask(nn.Identity())}
    elif layout == "sequence":
        made = {"bn": lambda: SequenceBatchNorm(channels) if bn_mask   # statistics over valid (b, t) only
                else IgnoreMask(SequenceBatchNorm(channels)),             # ... or over every (b, t), pads too
                "ln": lambda: IgnoreMask(LayerNorm(channels)),
                "gn": lambda: TokenGroupNorm(num_groups(channels), channels),
                "rms": lambda: IgnoreMask(RMSNorm(channels)),
                "dyt": lambda: IgnoreMask(DyT(channels)),
                "none": lambda: IgnoreMask(nn.Identity())}
    else:
        raise ValueError(f"layout must be 'image', 'vector' or 'sequence', got {layout!r}")
    return made[kind]()


class TinyCNN(nn.Module):
    """conv-norm-relu-pool twice, then a linear head: (N, 1, 8, 8) digits -> (N, num_classes) logits."""

    def __init__(self, norm="bn", channels=(16, 32), num_classes=10):
        super().__init__()
        c1, c2 = channels
        bias = norm == "none"                                  # a norm's shift makes the conv bias redundant
        self.conv1, self.norm1 = nn.Conv2d(1, c1, 3, padding=1, bias=bias), make_norm(norm, c1, "image")
        self.conv2, self.norm2 = nn.Conv2d(c1, c2, 3, padding=1, bias=bias), make_norm(norm, c2, "image")
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(c2 * 2 * 2, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.norm1(self.conv1(x))))  # N, c1, 4, 4
        x = self.pool(torch.relu(self.norm2(self.conv2(x))))  # N, c2, 2, 2
        return self.head(x.flatten(1))                         # N, num_classes


class TinyMLP(nn.Module):
    """linear-norm-relu twice, then a linear head: (N, 1, 8, 8) digits -> (N, num_classes) logits.

    Its BatchNorm averages N values per statistic, where TinyCNN's averages N*H*W.
    """

    def __init__(self, norm="bn", width=128, num_classes=10):
        super().__init__()
        bias = norm == "none"                                  # a norm's shift makes the bias redundant
        self.fc1, self.norm1 = nn.Linear(64, width, bias=bias), make_norm(norm, width, "vector")
        self.fc2, self.norm2 = nn.Linear(width, width, bias=bias), make_norm(norm, width, "vector")
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.norm1(self.fc1(x.flatten(1))))   # N, width
        x = torch.relu(self.norm2(self.fc2(x)))               # N, width
        return self.head(x)                                    # N, num_classes


class SelfAttention(nn.Module):
    """Multi-head self-attention that never attends to padded keys (and, if causal, to the future).

    The softmax(q k^T / sqrt(D)) v step runs as torch's fused `scaled_dot_product_attention`;
    fused=False spells it out (torch.func.vmap has no batching rule for the fused kernel).
    qk_norm="ln" or "rms" normalizes q and k over the head dimension first (QK-norm, Dehghani et al.).
    record: set it to a list and every call (spelled out) appends (max logit, mean attention entropy).
    """

    def __init__(self, d_model, n_heads, causal=False, dropout=0.0, qk_norm=None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if qk_norm not in (None, "ln", "rms"):
            raise ValueError(f"qk_norm must be None, 'ln' or 'rms', got {qk_norm!r}")
        self.n_heads, self.causal, self.dropout, self.fused = n_heads, causal, dropout, True
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        head_dim, self.record = d_model // n_heads, None
        self.q_norm, self.k_norm = ((make_norm(qk_norm, head_dim, "vector"), make_norm(qk_norm, head_dim, "vector"))
                                    if qk_norm else (None, None))

    def forward(self, x, pad_mask=None):
        B, T, C = x.shape                                                      # batch, time, channels
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # each B, H, T, D
        if self.q_norm is not None:                                            # each (b, h, t) over its D features
            q, k = self.q_norm(q), self.k_norm(k)
        allowed = None                                                         # None: every key
        if self.causal:
            allowed = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()   # key <= query
        if pad_mask is not None:
            real = ~pad_mask[:, None, None, :]                                 # B, 1, 1, T: real keys
            allowed = real if allowed is None else allowed & real
        dropout = self.dropout if self.training else 0.0
        if self.fused and self.record is None:
            out = nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=None if pad_mask is None else allowed,
                is_causal=self.causal and pad_mask is None, dropout_p=dropout)  # B, H, T, D
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])          # B, H, T, T
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            weights = scores.softmax(-1)                                       # B, H, T, T
            if self.record is not None:   # the largest logit; entropy in nats (0 log 0 = 0)
                entropy = -torch.special.xlogy(weights, weights).sum(-1).mean()
                self.record.append((scores.amax().item(), entropy.item()))
            out = nn.functional.dropout(weights, dropout) @ v                  # B, H, T, D
        return self.proj(out.transpose(1, 2).reshape(B, T, C))                 # B, T, C


class Block(nn.Module):
    """One Transformer block: attention then MLP, each in a residual branch with its norm.

    placement "pre": x + f(norm(x)); "post": norm(x + f(x)); "peri": x + norm(f(norm(x))).
    placement=None takes it from pre_ln (True: "pre", False: "post").
    """

    def __init__(self, d_model, n_heads, norm, pre_ln, causal, dropout, bn_mask=True, placement=None,
                 qk_norm=None):
        super().__init__()
        self.placement = placement or ("pre" if pre_ln else "post")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.pre_ln = self.placement == "pre"
        self.norm1 = make_norm(norm, d_model, "sequence", bn_mask)
        self.norm2 = make_norm(norm, d_model, "sequence", bn_mask)
        self.attn = SelfAttention(d_model, n_heads, causal, dropout, qk_norm)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
                                 nn.Dropout(dropout))
        if self.placement == "peri":   # the second norm of each branch, on its output
            self.norm1_out = make_norm(norm, d_model, "sequence", bn_mask)
            self.norm2_out = make_norm(norm, d_model, "sequence", bn_mask)

    def forward(self, x, pad_mask=None):
        if self.placement == "pre":   # x + f(norm(x)): the residual stream itself is never normalized
            x = x + self.attn(self.norm1(x, pad_mask), pad_mask)
            return x + self.mlp(self.norm2(x, pad_mask))
        if self.placement == "peri":  # x + norm(f(norm(x))): each branch adds a normalized update
            x = x + self.norm1_out(self.attn(self.norm1(x, pad_mask), pad_mask), pad_mask)
            return x + self.norm2_out(self.mlp(self.norm2(x, pad_mask)), pad_mask)
        x = self.norm1(x + self.attn(x, pad_mask), pad_mask)   # Post-LN: norm(x + f(x))
        return self.norm2(x + self.mlp(x), pad_mask)


class TinyTransformer(nn.Module):
    """A small Transformer: tokens (B, T) -> class logits (B, num_classes), or LM logits (B, T, vocab_size).

    bn_mask=False: norm="bn" layers ignore pad_mask, so pads enter BatchNorm's statistics (attention and
    pooling still skip them).  trim_padding=True: each call with a pad_mask first cuts the batch to its
    longest sequence (dynamic padding; pads must sit at the end), so LM logits then cover only those positions.
    init="torch" keeps torch.nn's default init of the blocks' Linear layers (uniform, variance 1/(3 fan_in));
    init="fan_in" draws them from N(0, 1/fan_in) with zero biases, the scale of Xiong et al.'s analysis.
    placement ("pre", "post", "peri"; None: from pre_ln) and qk_norm (None, "ln", "rms") go to every Block.
    """

    def __init__(self, vocab_size, d_model=64, n_heads=4, n_layers=2, max_len=128, norm="ln",
                 pre_ln=True, causal=False, num_classes=None, dropout=0.0, bn_mask=True, trim_padding=False,
                 init="torch", placement=None, qk_norm=None):
        super().__init__()
        if init not in ("torch", "fan_in"):
            raise ValueError(f"init must be 'torch' or 'fan_in', got {init!r}")
        placement = placement or ("pre" if pre_ln else "post")
        self.pre_ln, self.num_classes, self.trim_padding = placement == "pre", num_classes, trim_padding
        self.tok_emb, self.pos_emb = nn.Embedding(vocab_size, d_model), nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, norm, pre_ln, causal, dropout, bn_mask, placement,
                                          qk_norm) for _ in range(n_layers))
        last = placement != "post"                          # Pre- and Peri-LN end with a norm; Post-LN already does
        self.norm_f = make_norm(norm, d_model, "sequence", bn_mask) if last else None
        self.head = nn.Linear(d_model, num_classes or vocab_size)
        if init == "fan_in":   # the regime of Xiong et al.'s analysis: each block adds about as much as the stream holds
            for block in self.blocks:
                for layer in block.modules():
                    if isinstance(layer, nn.Linear):
                        nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
                        nn.init.zeros_(layer.bias)

    def forward(self, tokens, pad_mask=None):
        if self.trim_padding and pad_mask is not None:      # drop the columns past the longest sequence
            width = int((~pad_mask).sum(1).max())
            tokens, pad_mask = tokens[:, :width], pad_mask[:, :width]
        B, T = tokens.shape                                                    # batch, time
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(T, device=tokens.device))  # B, T, C
        for block in self.blocks:
            x = block(x, pad_mask)
        if self.norm_f is not None:
            x = self.norm_f(x, pad_mask)
        if self.num_classes is None:
            return self.head(x)                                                # B, T, vocab_size
        if pad_mask is None:
            return self.head(x.mean(1))                                        # B, num_classes
        valid = (~pad_mask).unsqueeze(-1).to(x.dtype)                          # B, T, 1
        return self.head((x * valid).sum(1) / valid.sum(1).clamp(min=1))      # mean of the real tokens
