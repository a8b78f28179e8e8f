"""CE-Net (Gu et al. 2019, IEEE TMI 38:2281): context encoder network for 2-D segmentation.

ResNet-34 encoder (MONAI's ResNet, whose parameter names are torchvision's, so ImageNet
weights load with :func:`emseg.networks.load_pretrained_encoder`), a dense atrous
convolution block and a residual multi-kernel pooling block at the bottleneck, and a
LinkNet decoder whose blocks are added to the encoder features (no concatenation).
Outputs logits at the input size, for inputs divisible by 32.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from emseg.networks.weights import load_pretrained_encoder

RESNET34_LAYERS = (3, 4, 6, 3)
RESNET34_WIDTHS = (64, 128, 256, 512)


def resnet34_encoder(in_channels: int = 1) -> ResNet:
    """ResNet-34 without its classifier, laid out (and named) like torchvision's ``resnet34``."""
    return ResNet(
        block="basic", layers=list(RESNET34_LAYERS), block_inplanes=list(RESNET34_WIDTHS), spatial_dims=2,
        n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2, shortcut_type="B",
        feed_forward=False, bias_downsample=False,
    )


class DenseAtrousConvolution(nn.Module):
    """DAC block: four cascaded branches of 3x3 convolutions with dilation 1, 3 and 5.

    As in the paper the convolutions of one dilation are shared between branches:
    branch outputs are d1(x), c(d3(x)), c(d3(d1(x))) and c(d5(d3(d1(x)))), with c a
    shared 1x1 convolution; each passes a ReLU and all are added to the input.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dilate1 = nn.Conv2d(channels, channels, 3, dilation=1, padding=1)
        self.dilate3 = nn.Conv2d(channels, channels, 3, dilation=3, padding=3)
        self.dilate5 = nn.Conv2d(channels, channels, 3, dilation=5, padding=5)
        self.project = nn.Conv2d(channels, channels, 1)
        for conv in (self.dilate1, self.dilate3, self.dilate5, self.project):
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.dilate1(x)
        d13 = self.dilate3(d1)
        branches = (d1, self.project(self.dilate3(x)), self.project(d13), self.project(self.dilate5(d13)))
        return x + sum(F.relu(b) for b in branches)


class ResidualMultiKernelPooling(nn.Module):
    """RMP block: max-pool with several kernel sizes, reduce each to one channel with a shared
    1x1 convolution, upsample bilinearly and concatenate with the input (C + len(pool_sizes) channels).

    Pools use ``ceil_mode`` so that a small feature map (a 64x64 patch has a 2x2 bottleneck)
    still gives one value per pool instead of an error; at the paper's sizes it changes nothing
    but the border windows.
    """

    def __init__(self, channels: int, pool_sizes: Sequence[int] = (2, 3, 5, 6)) -> None:
        super().__init__()
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=k, ceil_mode=True) for k in pool_sizes)
        self.reduce = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(self.reduce(pool(x)), size=size, mode="bilinear", align_corners=False)
                  for pool in self.pools]
        return torch.cat([*pooled, x], dim=1)


class LinkNetDecoderBlock(nn.Sequential):
    """LinkNet decoder block: 1x1 conv to C/4, 3x3 stride-2 transposed conv, 1x1 conv to ``out_channels``,
    each followed by batch norm and ReLU; doubles the spatial size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        mid = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )


class CENet(nn.Module):
    """CE-Net with a ResNet-34 encoder.

    Args:
        in_channels: image channels (1 for EM; 3 reproduces the original).
        out_channels: output channels (logits; 2 for softmax membrane/interior).
        pool_sizes: kernel sizes of the residual multi-kernel pooling block.
        pretrained_encoder: local file with torchvision ResNet-34 ImageNet weights for the encoder
            (``None``: train from scratch).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        pool_sizes: Sequence[int] = (2, 3, 5, 6),
        pretrained_encoder: str | None = None,
    ) -> None:
        super().__init__()
        widths = RESNET34_WIDTHS
        self.encoder = resnet34_encoder(in_channels)
        if pretrained_encoder:
            load_pretrained_encoder(self.encoder, pretrained_encoder, first_conv="conv1.weight", ignore_prefixes=("fc.",))
        self.dac = DenseAtrousConvolution(widths[3])
        self.rmp = ResidualMultiKernelPooling(widths[3], pool_sizes)
        self.decoder4 = LinkNetDecoderBlock(widths[3] + len(pool_sizes), widths[2])
        self.decoder3 = LinkNetDecoderBlock(widths[2], widths[1])
        self.decoder2 = LinkNetDecoderBlock(widths[1], widths[0])
        self.decoder1 = LinkNetDecoderBlock(widths[0], widths[0])
        self.head = nn.Sequential(
            nn.ConvTranspose2d(widths[0], 32, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"CENet needs height and width divisible by 32, got {tuple(x.shape[-2:])}")
        enc = self.encoder
        x = enc.maxpool(enc.act(enc.bn1(enc.conv1(x))))
        e1 = enc.layer1(x)
        e2 = enc.layer2(e1)
        e3 = enc.layer3(e2)
        e4 = self.rmp(self.dac(enc.layer4(e3)))
        d3 = self.decoder4(e4) + e3
        d2 = self.decoder3(d3) + e2
        d1 = self.decoder2(d2) + e1
        return self.head(self.decoder1(d1))
