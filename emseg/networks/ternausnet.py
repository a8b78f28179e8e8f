"""TernausNet (Iglovikov & Shvets 2018): a U-Net whose encoder is VGG11 or VGG16.

The encoder is built exactly in torchvision's VGG layout (``encoder.features.N``), so a
torchvision ImageNet state dict loads into it with no renaming
(:func:`emseg.networks.load_pretrained_encoder`; the classifier is dropped and the RGB
filters of the first layer are folded for 1-channel input). The decoder is the paper's:
per level a 3x3 conv + ReLU and a stride-2 transposed convolution + ReLU, concatenated with
the encoder feature of the same size, ``num_filters`` = 32; a 1x1 convolution gives the
logits for any number of classes. Inputs must be multiples of 32.
"""

from __future__ import annotations

import torch
from torch import nn

from emseg.errors import require_flag
from emseg.networks.weights import load_pretrained_encoder

POOL = "M"
VGG_LAYOUTS = {  # torchvision's VGG configurations "A" (vgg11) and "D" (vgg16), without batch norm
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
}
# (middle, out) channels, in units of num_filters, of the blocks center, dec5, dec4, dec3, dec2;
# and the transposed convolution's kernel, as in the reference's UNet11 and UNet16 (is_deconv=True)
DECODERS = {
    "vgg11": (((16, 8), (16, 8), (16, 4), (8, 2), (4, 1)), 3),
    "vgg16": (((16, 8), (16, 8), (16, 8), (8, 2), (4, 1)), 4),
}


def _norm(channels: int, batch_norm: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if batch_norm else []


class VGGEncoder(nn.Module):
    """VGG convolutional part as ``self.features``, indexed like torchvision's ``vgg11``/``vgg16`` or, with
    ``batch_norm``, like ``vgg11_bn``/``vgg16_bn`` (a batch norm after every convolution)."""

    def __init__(self, layout: str = "vgg11", in_channels: int = 3, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG_LAYOUTS[layout]:
            if item == POOL:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), *_norm(item, batch_norm), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature maps before each pooling (the skips, full size first) and the last pooled map."""
        skips = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                skips.append(x)
            x = layer(x)
        return skips, x


def _conv_relu(in_channels: int, out_channels: int, batch_norm: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), *_norm(out_channels, batch_norm),
                         nn.ReLU(inplace=True))


class TernausDecoderBlock(nn.Sequential):
    """3x3 conv + ReLU to ``middle`` channels, then a stride-2 transposed conv + ReLU to ``out`` channels
    (each convolution followed by a batch norm with ``batch_norm``)."""

    def __init__(self, in_channels: int, middle: int, out: int, kernel_size: int, batch_norm: bool = False) -> None:
        output_padding = 1 if kernel_size == 3 else 0
        super().__init__(
            _conv_relu(in_channels, middle, batch_norm),
            nn.ConvTranspose2d(middle, out, kernel_size, stride=2, padding=1, output_padding=output_padding),
            *_norm(out, batch_norm),
            nn.ReLU(inplace=True),
        )


class TernausNet(nn.Module):
    """TernausNet with a VGG11 or VGG16 encoder.

    Args:
        encoder: ``"vgg11"`` (TernausNet11) or ``"vgg16"`` (TernausNet16).
        in_channels: image channels (1 for EM).
        out_channels: classes (logits).
        num_filters: decoder width unit (32 in the paper).
        pretrained_encoder: local file with a torchvision VGG state dict (ImageNet weights), or ``None``;
            with ``batch_norm`` it must come from ``vgg11_bn``/``vgg16_bn``.
        batch_norm: a batch norm after every convolution of encoder and decoder (not in the paper, which
            starts from ImageNet weights; it lets the network train from scratch at the other bundles' rate).
    """

    def __init__(
        self,
        encoder: str = "vgg11",
        in_channels: int = 1,
        out_channels: int = 2,
        num_filters: int = 32,
        pretrained_encoder: str | None = None,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if encoder not in VGG_LAYOUTS:
            raise ValueError(f"encoder must be one of {sorted(VGG_LAYOUTS)}, got {encoder!r}")
        self.encoder = VGGEncoder(encoder, in_channels, require_flag(batch_norm, "batch_norm"))
        if pretrained_encoder:
            load_pretrained_encoder(self.encoder, pretrained_encoder, first_conv="features.0.weight",
                                    ignore_prefixes=("classifier.",))
        skip_widths = [c for c, nxt in zip(VGG_LAYOUTS[encoder], VGG_LAYOUTS[encoder][1:] + (None,)) if nxt == POOL]
        blocks, kernel = DECODERS[encoder]
        decoder, channels = [], skip_widths[-1]
        for (middle, out), skip in zip(blocks, [0, *skip_widths[:0:-1]]):
            decoder.append(TernausDecoderBlock(channels + skip, middle * num_filters, out * num_filters, kernel,
                                               batch_norm))
            channels = out * num_filters
        self.decoder = nn.ModuleList(decoder)
        self.dec1 = _conv_relu(channels + skip_widths[0], num_filters, batch_norm)
        self.final = nn.Conv2d(num_filters, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"TernausNet needs height and width divisible by 32, got {tuple(x.shape[-2:])}")
        skips, x = self.encoder(x)
        x = self.decoder[0](x)
        for block, skip in zip(self.decoder[1:], skips[:0:-1]):
            x = block(torch.cat([x, skip], dim=1))
        return self.final(self.dec1(torch.cat([x, skips[0]], dim=1)))


class TernausNet11(TernausNet):
    """TernausNet with the VGG11 encoder."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, num_filters: int = 32,
                 pretrained_encoder: str | None = None, batch_norm: bool = False) -> None:
        super().__init__("vgg11", in_channels, out_channels, num_filters, pretrained_encoder, batch_norm)


class TernausNet16(TernausNet):
    """TernausNet with the VGG16 encoder."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, num_filters: int = 32,
                 pretrained_encoder: str | None = None, batch_norm: bool = False) -> None:
        super().__init__("vgg16", in_channels, out_channels, num_filters, pretrained_encoder, batch_norm)
