"""Small building blocks shared by the Tacotron2 modules.

The wrappers exist for their state_dict names: DeepLearningExamples (DLE)
keeps the real layer one attribute down (``linear_layer`` / ``conv``), so a
``LinearNorm`` called ``query_layer`` stores ``query_layer.linear_layer.weight``.
Initialisation follows DLE (Xavier-uniform with a named gain); it only
matters for freshly built models, loaded weights overwrite it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LinearNorm(nn.Module):
    """``nn.Linear`` stored as ``linear_layer``, Xavier-uniform initialised.

    ``x: [..., in_dim] -> [..., out_dim]``, dtype of the weights.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True,
                 w_init_gain: str = "linear") -> None:
        super().__init__()
        self.linear_layer = nn.Linear(in_dim, out_dim, bias=bias)
        nn.init.xavier_uniform_(self.linear_layer.weight,
                                gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_layer(x)


class ConvNorm(nn.Module):
    """``nn.Conv1d`` stored as ``conv``, "same" padding for odd kernels.

    ``x: [B, in_channels, T] -> [B, out_channels, T]`` (stride 1, odd kernel).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int | None = None, dilation: int = 1,
                 bias: bool = True, w_init_gain: str = "linear") -> None:
        super().__init__()
        if padding is None:
            if kernel_size % 2 != 1:
                raise ValueError(f"ConvNorm needs an odd kernel_size for same padding, got {kernel_size}")
            padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size,
                              stride=stride, padding=padding, dilation=dilation, bias=bias)
        nn.init.xavier_uniform_(self.conv.weight, gain=nn.init.calculate_gain(w_init_gain))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int,
            w_init_gain: str) -> nn.Sequential:
    """``Sequential(ConvNorm, BatchNorm1d)``: DLE's encoder/postnet block (``.0.conv.*``, ``.1.*``)."""
    return nn.Sequential(
        ConvNorm(in_channels, out_channels, kernel_size=kernel_size,
                 padding=(kernel_size - 1) // 2, w_init_gain=w_init_gain),
        nn.BatchNorm1d(out_channels),
    )


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``lengths: [B] int -> mask: [B, max_len] bool``, True at padded positions."""
    ids = torch.arange(max_len, device=lengths.device)
    return ids.unsqueeze(0) >= lengths.unsqueeze(1)
