"""Load weights safely: whole networks from checkpoints, ImageNet encoders from a local file.

Every file is loaded with ``torch.load(..., weights_only=True)``: a file that needs arbitrary
code to load (a pickled object) is refused with a message naming it. Nothing is downloaded.

The encoders keep torchvision's parameter names, so a file saved from a torchvision
model (``torch.save(model.state_dict(), path)``) loads as it is. Keys the encoder does
not have (a classifier) are dropped; an RGB first convolution is folded to the
encoder's input channels by summing over colour (a grey image fed as R = G = B gives
the same activations).
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)


def read_state_dict(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict, str]:
    """Network weights from ``path`` and the sha256 of the bytes they were read from (read once, so the digest
    names exactly these weights even if the file is replaced meanwhile). Nothing pickled is executed.

    Accepts a plain state dict (``models/model.pt``) or a training checkpoint with a ``model`` entry. A file that
    needs arbitrary code to load is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint; train the bundle first, or set ckpt_path or run_name")
    data = path.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused, the checkpoint holds objects other than tensors ({err})") from err
    except RuntimeError as err:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state, hashlib.sha256(data).hexdigest()


def load_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Network weights from ``path`` (see :func:`read_state_dict`)."""
    return read_state_dict(path, device)[0]


def load_weights(network: nn.Module, path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """``network`` with the weights from ``path`` loaded (strictly) and switched to eval mode."""
    return load_weights_with_digest(network, path, device)[0]


def load_weights_with_digest(network: nn.Module, path: str | Path,
                             device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """:func:`load_weights`, and the sha256 of the file's bytes that were loaded."""
    state, digest = read_state_dict(path, device)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) < 300 else detail[:300] + "..."
        raise ValueError(f"{path}: weights do not fit the network ({detail}); if they were trained elsewhere, set the "
                         f"network's keys (--features ...) and --network_from config") from err
    return network.eval(), digest


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


def build_network(saved: dict) -> nn.Module:
    """The network a resolved ``network_def`` (as saved with weights in a run record or sidecar) describes."""
    from monai.bundle import ConfigParser

    return ConfigParser({"network_def": dict(saved)}).get_parsed_content("network_def")
