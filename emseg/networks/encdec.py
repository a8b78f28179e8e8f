"""Plain convolution/deconvolution encoder-decoder: no skip connections.

The baseline of the TensorFlow 2 reference project: each encoder stage is 3x3
convolutions followed by 2x2 max-pooling, each decoder stage a stride-2 transposed
convolution followed by 3x3 convolutions, and a 1x1 convolution gives the logits.
Without skips, fine detail has to pass the bottleneck, which is what the comparison
with U-Net shows. Inputs must be divisible by 2 ** len(features).
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn


def _convs(in_channels: int, out_channels: int, n: int, norm: str | None) -> list[nn.Module]:
    return [Convolution(2, in_channels if i == 0 else out_channels, out_channels, kernel_size=3, act="relu",
                        norm=norm, bias=norm is None) for i in range(n)]


class EncoderDecoder(nn.Module):
    """Encoder-decoder without skips.

    Args:
        in_channels, out_channels: image channels and output (logit) channels.
        features: channels of the encoder stages, shallow to deep; the decoder mirrors them and the
            bottleneck has ``2 * features[-1]`` channels.
        convs_per_stage: 3x3 convolutions per stage.
        norm: MONAI norm name for every convolution (``None`` for plain conv + bias, as in the reference).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 64, 128, 256),
        convs_per_stage: int = 2,
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        self.factor = 2 ** len(features)
        layers: list[nn.Module] = []
        channels = in_channels
        for width in features:
            layers += [*_convs(channels, width, convs_per_stage, norm), nn.MaxPool2d(2)]
            channels = width
        layers += _convs(channels, 2 * features[-1], convs_per_stage, norm)
        channels = 2 * features[-1]
        for width in reversed(features):
            layers += [
                Convolution(2, channels, width, strides=2, kernel_size=2, padding=0, output_padding=0, act="relu", norm=norm, bias=norm is None,
                            is_transposed=True),
                *_convs(width, width, convs_per_stage, norm),
            ]
            channels = width
        layers.append(nn.Conv2d(channels, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"EncoderDecoder needs height and width divisible by {self.factor}, "
                             f"got {tuple(x.shape[-2:])}")
        return self.layers(x)
