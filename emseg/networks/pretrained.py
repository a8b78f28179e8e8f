"""Load ImageNet weights from a local file into an encoder (nothing is downloaded).

The encoders keep torchvision's parameter names, so a file saved from a torchvision
model (``torch.save(model.state_dict(), path)``) loads as it is. Keys the encoder does
not have (a classifier) are dropped; an RGB first convolution is folded to the
encoder's input channels by summing over colour (a grey image fed as R = G = B gives
the same activations).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from emseg.inference import load_state_dict

logger = logging.getLogger(__name__)


def fold_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Convolution ``weight`` (out, 3, kh, kw) for ``channels`` inputs: summed to 1, else repeated mean."""
    if weight.shape[1] == channels:
        return weight
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)


def load_pretrained_encoder(
    encoder: nn.Module,
    path: str | Path,
    first_conv: str,
    ignore_prefixes: Sequence[str] = (),
) -> nn.Module:
    """Load the state dict at ``path`` into ``encoder`` and return it.

    Args:
        encoder: the module whose parameter names match the file's.
        path: a local ``.pt``/``.pth`` state dict (loaded with ``weights_only=True``).
        first_conv: key of the first convolution's weight, folded to the encoder's input channels.
        ignore_prefixes: keys of the file to drop (e.g. the classifier, ``"fc."``).

    Raises:
        ValueError: naming the file, when keys are missing or left over, or shapes do not fit.
    """
    state = {k: v for k, v in load_state_dict(path).items() if not k.startswith(tuple(ignore_prefixes))}
    own = encoder.state_dict()
    if first_conv in state and first_conv in own:
        state[first_conv] = fold_input_channels(state[first_conv], own[first_conv].shape[1])
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: does not fit the {type(encoder).__name__} encoder: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"wrong shape {wrong[:5]}"
        )
    encoder.load_state_dict(state)
    logger.info("loaded pretrained encoder weights from %s (%d tensors)", path, len(state))
    return encoder
