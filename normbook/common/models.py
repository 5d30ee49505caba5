"""The book's norm factory and its two small vision models (a CNN and an MLP
for 8x8 digits), each with a pluggable norm; the Transformer is in
`normbook.common.transformer`.

Every norm comes from `normlib.nn` (never torch.nn's), made by `make_norm`, and
every norm module takes `forward(x, pad_mask=None)` so a model can hand the
padding mask to all of them; only BatchNorm uses it (unless built with
bn_mask=False).
"""
import torch
from torch import nn

from normlib.nn import (
    BatchNorm1d,
    BatchNorm2d,
    BatchRenorm1d,
    BatchRenorm2d,
    DyT,
    GroupNorm,
    ImageRMSNorm,
    LayerNorm,
    LayerNorm2d,
    RMSNorm,
    SequenceBatchNorm,
    WSConv2d,
    weight_norm,
)

NORMS = ("bn", "ln", "rms", "gn", "none")
SEQUENCE_NORMS = NORMS + ("dyt",)  # DyT (no statistics) is for (B, T, C) only
# ConvNeXt's LayerNorm: each pixel's C channels (image layout only)
IMAGE_NORMS = NORMS + ("ln2d", "brn")
# Batch Renormalization (Ioffe 2017), for images and vectors only
VECTOR_NORMS = NORMS + ("brn",)
# how TinyCNN and TinyMLP hold their conv or linear weights: as they are,
# weight-standardized (WSConv2d, convolutions only) or weight-normalized
WEIGHTS = ("plain", "ws", "wn")


def num_groups(channels, max_groups=8):
    """The largest group count <= max_groups that divides `channels`
    (GroupNorm's groups)."""
    return max(g for g in range(1, min(max_groups, channels) + 1)
               if channels % g == 0)


class IgnoreMask(nn.Module):
    """Wraps a norm that needs no padding mask so that it accepts one and
    ignores it."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x, pad_mask=None):
        return self.norm(x)


class TokenGroupNorm(nn.Module):
    """GroupNorm for (B, T, C): each token's C features split into groups,
    normalized per group."""

    def __init__(self, groups, channels):
        super().__init__()
        self.norm = GroupNorm(groups, channels)

    def forward(self, x, pad_mask=None):
        B, T, C = x.shape                        # batch, time, channels
        # every token is a "sample" of GroupNorm
        return self.norm(x.reshape(B * T, C)).reshape(B, T, C)


def make_norm(kind, channels, layout, bn_mask=True):
    """A norm module of `kind` (one of NORMS; IMAGE_NORMS, VECTOR_NORMS and
    SEQUENCE_NORMS add their own) for layout "image"
    (N, C, H, W), "vector" (N, C) or "sequence" (B, T, C).

    bn_mask=False makes a sequence BatchNorm ignore pad_mask: pads then enter
    its statistics (unmasked BN).
    """
    allowed = {"sequence": SEQUENCE_NORMS, "image": IMAGE_NORMS,
               "vector": VECTOR_NORMS}.get(layout, NORMS)
    if kind not in allowed:
        raise ValueError(f"kind must be one of {allowed} for layout "
                         f"{layout!r}, got {kind!r}")
    if layout == "image":
        made = {"bn": lambda: IgnoreMask(BatchNorm2d(channels)),
                # LayerNorm over (C, H, W) of each sample
                "ln": lambda: IgnoreMask(GroupNorm(1, channels)),
                # LayerNorm over each pixel's C channels (ConvNeXt)
                "ln2d": lambda: IgnoreMask(LayerNorm2d(channels)),
                # BatchNorm corrected towards the running statistics
                "brn": lambda: IgnoreMask(BatchRenorm2d(channels)),
                "gn": lambda: IgnoreMask(GroupNorm(num_groups(channels),
                                                   channels)),
                "rms": lambda: IgnoreMask(ImageRMSNorm(channels)),
                "none": lambda: IgnoreMask(nn.Identity())}
    elif layout == "vector":
        made = {"bn": lambda: IgnoreMask(BatchNorm1d(channels)),
                "brn": lambda: IgnoreMask(BatchRenorm1d(channels)),
                "ln": lambda: IgnoreMask(LayerNorm(channels)),
                "gn": lambda: IgnoreMask(GroupNorm(num_groups(channels),
                                                   channels)),
                "rms": lambda: IgnoreMask(RMSNorm(channels)),
                "none": lambda: IgnoreMask(nn.Identity())}
    elif layout == "sequence":
        # statistics over valid (b, t) only, or (bn_mask=False) over every
        # (b, t), pads too
        made = {"bn": lambda: SequenceBatchNorm(channels) if bn_mask
                else IgnoreMask(SequenceBatchNorm(channels)),
                "ln": lambda: IgnoreMask(LayerNorm(channels)),
                "gn": lambda: TokenGroupNorm(num_groups(channels), channels),
                "rms": lambda: IgnoreMask(RMSNorm(channels)),
                "dyt": lambda: IgnoreMask(DyT(channels)),
                "none": lambda: IgnoreMask(nn.Identity())}
    else:
        raise ValueError("layout must be 'image', 'vector' or 'sequence', "
                         f"got {layout!r}")
    return made[kind]()


def check_weights(weights, allowed=WEIGHTS):
    """Refuse a `weights` choice outside `allowed` (one of WEIGHTS)."""
    if weights not in allowed:
        raise ValueError(f"weights must be one of {allowed}, got {weights!r}")


def reweight(layers, weights):
    """Weight-normalize each layer's weight (weights="wn"), in place."""
    if weights == "wn":
        for layer in layers:
            weight_norm(layer)


class TinyCNN(nn.Module):
    """conv-norm-relu-pool twice, then a linear head: (N, 1, 8, 8) digits ->
    (N, num_classes) logits.

    weights (keyword): "plain" (nn.Conv2d), "ws" (WSConv2d, Weight
    Standardization, meant to be used with norm="gn") or "wn" (each conv's
    weight normalized, `normlib.nn.weight_norm`); the head stays plain.
    """

    def __init__(self, norm="bn", channels=(16, 32), num_classes=10, *,
                 weights="plain"):
        super().__init__()
        check_weights(weights)
        c1, c2 = channels
        # a norm's shift makes the conv bias redundant
        bias = norm == "none"
        conv = WSConv2d if weights == "ws" else nn.Conv2d
        self.conv1, self.norm1 = (conv(1, c1, 3, padding=1, bias=bias),
                                  make_norm(norm, c1, "image"))
        self.conv2, self.norm2 = (conv(c1, c2, 3, padding=1, bias=bias),
                                  make_norm(norm, c2, "image"))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(c2 * 2 * 2, num_classes)
        reweight((self.conv1, self.conv2), weights)

    def forward(self, x):
        x = self.pool(torch.relu(self.norm1(self.conv1(x))))  # N, c1, 4, 4
        x = self.pool(torch.relu(self.norm2(self.conv2(x))))  # N, c2, 2, 2
        return self.head(x.flatten(1))                         # N, num_classes


class TinyMLP(nn.Module):
    """linear-norm-relu twice, then a linear head: (N, 1, 8, 8) digits ->
    (N, num_classes) logits.

    Its BatchNorm averages N values per statistic, where TinyCNN's averages
    N*H*W.  weights (keyword): "plain" or "wn" (fc1's and fc2's weights
    normalized, `normlib.nn.weight_norm`; the head stays plain).
    """

    def __init__(self, norm="bn", width=128, num_classes=10, *,
                 weights="plain"):
        super().__init__()
        check_weights(weights, ("plain", "wn"))
        bias = norm == "none"      # a norm's shift makes the bias redundant
        self.fc1, self.norm1 = (nn.Linear(64, width, bias=bias),
                                make_norm(norm, width, "vector"))
        self.fc2, self.norm2 = (nn.Linear(width, width, bias=bias),
                                make_norm(norm, width, "vector"))
        self.head = nn.Linear(width, num_classes)
        reweight((self.fc1, self.fc2), weights)

    def forward(self, x):
        x = torch.relu(self.norm1(self.fc1(x.flatten(1))))   # N, width
        x = torch.relu(self.norm2(self.fc2(x)))               # N, width
        return self.head(x)                                    # N, num_classes
