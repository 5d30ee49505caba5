"""LayerNorm2d: LayerNorm over the channels of each pixel of an image, as
ConvNeXt and timm define it.

Imported by `normlib.nn`, which is where to find it.
"""
from . import functional as F
from ._autograd import AffineNorm, check_eps, check_param_dtype, normalize


class LayerNorm2d(AffineNorm):
    """LayerNorm for channels-first images (N, C, H, W): each pixel
    normalized over its C channels; drop-in for timm's LayerNorm2d and
    ConvNeXt's `LayerNorm(..., data_format="channels_first")`.

    ConvNeXt (Liu et al. 2022) brought the Transformer's LayerNorm into a
    CNN: one mean and variance per sample and position, over the channels,
    as a Transformer takes them per token over its features.  It is neither
    `GroupNorm(1, C)` nor `LayerNorm([C, H, W])`: those average over
    (C, H, W), one statistic per sample, with a weight per channel and per
    value respectively.

    The input is permuted to (N, H, W, C), normalized over its last axis by
    `functional.layer_norm`, whose backward is the derived
    `normalize_backward`, and permuted back, as timm does with torch's.

    - `num_channels`: C, the input's channels (axis 1), the axis each
      statistic averages over.
    - `eps`: added to the variance before the square root; 1e-6 as in
      ConvNeXt and timm (torch's LayerNorm has 1e-5).
    - `elementwise_affine`: whether to learn a weight (initialized to ones)
      and a bias (zeros), one value per channel (timm's `affine`).
    - `bias`: `False` learns no bias, only the weight; relevant only with
      `elementwise_affine=True`.
    - `device`, `dtype`: where and in what dtype the parameters are created.
    """

    def __init__(self, num_channels, eps=1e-6, elementwise_affine=True,
                 bias=True, device=None, dtype=None):
        super().__init__()
        check_eps(eps)
        # the attributes of timm's LayerNorm2d, a torch.nn.LayerNorm
        self.normalized_shape, self.eps = (num_channels,), eps
        self.elementwise_affine = elementwise_affine
        self._init_affine(self.normalized_shape, elementwise_affine, bias,
                          {"device": device, "dtype": dtype})

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")

    def forward(self, input):
        (channels,) = self.normalized_shape
        if input.dim() != 4 or input.shape[1] != channels:
            raise RuntimeError(f"expected input of shape (N, {channels}, H, "
                               f"W) for num_channels={channels}, got "
                               f"{list(input.shape)}")
        check_param_dtype(input, weight=self.weight, bias=self.bias)
        x = input.permute(0, 2, 3, 1)                   # N, H, W, C
        y = normalize(x, self.weight, self.bias,
                      lambda x, w, b: F.layer_norm(x, self.normalized_shape,
                                                   w, b, self.eps))
        return y.permute(0, 3, 1, 2)                    # N, C, H, W
