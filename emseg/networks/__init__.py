"""Architectures MONAI lacks, and the deep-supervision wrapper for MONAI's UNet++.

MONAI's ``BasicUNet`` is used directly by the U-Net bundle; everything here builds on
MONAI layers (its ResNet for the CE-Net encoder) rather than re-typing them.
"""

from emseg.networks.cenet import (
    CENet,
    DenseAtrousConvolution,
    LinkNetDecoderBlock,
    ResidualMultiKernelPooling,
)
from emseg.networks.encdec import EncoderDecoder
from emseg.networks.ternausnet import TernausNet, TernausNet11, TernausNet16, VGGEncoder
from emseg.networks.unetpp import UNetPlusPlus, final_output
from emseg.networks.weights import (
    build_network,
    load_pretrained_encoder,
    load_state_dict,
    load_weights,
    load_weights_with_digest,
    read_state_dict,
)

__all__ = [
    "CENet",
    "DenseAtrousConvolution",
    "EncoderDecoder",
    "LinkNetDecoderBlock",
    "ResidualMultiKernelPooling",
    "TernausNet",
    "TernausNet11",
    "TernausNet16",
    "UNetPlusPlus",
    "VGGEncoder",
    "build_network",
    "final_output",
    "load_pretrained_encoder",
    "load_state_dict",
    "load_weights",
    "load_weights_with_digest",
    "read_state_dict",
]
