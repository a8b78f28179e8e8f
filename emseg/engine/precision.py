"""Mixed precision and memory layout that work the same on CPU and CUDA.

MONAI 1.6's engines autocast only on CUDA and its inferers never, so emseg wraps
the inferer: every network call runs under ``torch.autocast`` for the device the
inputs are on (bfloat16 on CPU, float16 on CUDA) and returns float32, which keeps
losses, sliding-window blending and metrics in full precision. Training,
validation and inference all go through this one wrapper.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer


def autocast_dtype(device_type: str) -> torch.dtype:
    """Reduced-precision type for ``device_type``: bfloat16 on CPU, float16 on CUDA."""
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def _to_float32(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(o) for o in output)
    if isinstance(output, dict):
        return {k: _to_float32(v) for k, v in output.items()}
    return output


class AutocastInferer(Inferer):
    """Run ``inferer`` with each network call autocast (when ``amp``) and in channels-last layout (when asked).

    Args:
        inferer: the MONAI inferer to wrap (default: ``SimpleInferer``).
        amp: autocast network calls to :func:`autocast_dtype` of the input's device.
        channels_last: pass 4-D inputs to the network in ``torch.channels_last`` memory format.
    """

    def __init__(self, inferer: Inferer | None = None, amp: bool = True, channels_last: bool = False) -> None:
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.amp = amp
        self.channels_last = channels_last

    def wrap(self, network: Callable) -> Callable:
        """``network`` as a callable that autocasts and returns float32."""

        def forward(inputs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if isinstance(inputs, MetaTensor):  # metadata tracking slows every op of the network
                inputs = inputs.as_tensor()
            if self.channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            device_type = inputs.device.type
            with torch.autocast(device_type, dtype=autocast_dtype(device_type), enabled=self.amp):
                output = network(inputs, *args, **kwargs)
            return _to_float32(output)

        return forward

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        return self.inferer(inputs, self.wrap(network), *args, **kwargs)


def prepare_network(network: torch.nn.Module, device: str | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """Move ``network`` to ``device``, in channels-last layout when asked."""
    network = network.to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network
