"""Mixed precision and memory layout that work the same on CPU and CUDA.

MONAI 1.6's engines autocast only on CUDA and its inferers never, so emseg wraps
the inferer: every network call in training runs under ``torch.autocast`` for the
device the inputs are on (bfloat16 on CPU, float16 on CUDA) and returns float32,
which keeps losses, sliding-window blending and metrics in full precision.

A network in eval mode (validation, evaluation, inference) runs as an inference
copy instead: batch norm folded into the convolution before it, weights cast to the
reduced precision once (instead of at every call under autocast), the layout
chosen. The copy is remade whenever the network's parameters change, so validation
during training always sees the current weights. On this project's 2-core CPU this
halves the time of a forward pass (see ``scripts/benchmark.py``).

``amp`` and ``channels_last`` may be ``"auto"``: :func:`measure_settings` times the candidates on the device
at hand, logs which it chose, and keeps the choice, so the same command gives the same arithmetic every time:

- a training run records its settings in ``run.json``; resuming it (or rerunning its ``--run_name``) uses them;
- otherwise a choice is measured once per machine, device, torch version, network, input shape and mode
  (training or inference) and kept in ``precision.json`` in emseg's cache folder (``$EMSEG_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/emseg``, else ``~/.cache/emseg``); delete that file to measure again.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from emseg.io.files import write_text_atomically
from emseg.networks import final_output

logger = logging.getLogger(__name__)

AUTO = "auto"


def autocast_dtype(device_type: str) -> torch.dtype:
    """Reduced-precision type for ``device_type``: bfloat16 on CPU, float16 on CUDA."""
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def inference_dtype(device_type: str) -> torch.dtype:
    """Type of an inference copy's weights: bfloat16 where the device has it (float16 overflows more easily
    once batch norm is folded into the weights), else float16."""
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _to_float32(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(o) for o in output)
    if isinstance(output, dict):
        return {k: _to_float32(v) for k, v in output.items()}
    return output


_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batch_norm(network: nn.Module) -> int:
    """Fold every eval-mode batch norm that directly follows a convolution into that convolution, in place.

    A pair is a convolution followed by a batch norm in the same ``nn.Sequential``, or by a ``nn.Sequential``
    whose first module is the batch norm (MONAI's ``Convolution``: conv, then norm-dropout-activation).
    Returns the number of batch norms folded.
    """
    folded = 0
    for parent in list(network.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (conv_name, conv), (next_name, following) in zip(children, children[1:]):
            holder, norm_name, norm = parent, next_name, following
            if isinstance(following, nn.Sequential) and len(following):
                holder, (norm_name, norm) = following, next(iter(following.named_children()))
            if not (isinstance(conv, _CONVOLUTIONS) and isinstance(norm, _NORMS)) or norm.training \
                    or not norm.track_running_stats or norm.num_features != (conv.weight.shape[1] * conv.groups
                                                                              if conv.transposed else conv.weight.shape[0]):
                continue
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm, transpose=conv.transposed))
            setattr(holder, norm_name, nn.Identity())
            folded += 1
    return folded


def _version(network: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``network`` is changed in place (optimizer step, load)."""
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(network.parameters(), network.buffers()))


def inference_copy(network: nn.Module, amp: bool, channels_last: bool) -> nn.Module:
    """An eval-mode copy of ``network`` with batch norm folded, weights in :func:`inference_dtype` when ``amp``
    and in channels-last layout when asked."""
    device = next(itertools.chain(network.parameters(), network.buffers()), torch.empty(0)).device
    fast = copy.deepcopy(network).eval()
    fold_batch_norm(fast)
    if amp:
        fast = fast.to(inference_dtype(device.type))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast


class AutocastInferer(Inferer):
    """Run ``inferer`` with each network call in reduced precision (when ``amp``) and channels-last layout
    (when asked), returning float32.

    A network in training mode is autocast; one in eval mode runs as its :func:`inference_copy`, remade when
    its weights change.

    Args:
        inferer: the MONAI inferer to wrap (default: ``SimpleInferer``).
        amp: reduced precision (:func:`autocast_dtype` for training, :func:`inference_dtype` for eval).
        channels_last: pass 4-D inputs to the network in ``torch.channels_last`` memory format.
    """

    def __init__(self, inferer: Inferer | None = None, amp: bool = True, channels_last: bool = False) -> None:
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.amp = amp
        self.channels_last = channels_last
        self._copy: tuple[int, tuple, nn.Module] | None = None

    def _eval_network(self, network: nn.Module) -> nn.Module:
        version = _version(network)
        if self._copy is None or self._copy[0] != id(network) or self._copy[1] != version:
            self._copy = (id(network), version, inference_copy(network, self.amp, self.channels_last))
        return self._copy[2]

    def wrap(self, network: Callable) -> Callable:
        """``network`` as a callable in the chosen precision and layout that returns float32."""
        frozen = None
        if isinstance(network, nn.Module) and not network.training:
            frozen = self._eval_network(network)

        def forward(inputs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if isinstance(inputs, MetaTensor):  # metadata tracking slows every op of the network
                inputs = inputs.as_tensor()
            if self.channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            device_type = inputs.device.type
            if frozen is not None:
                dtype = inference_dtype(device_type) if self.amp else torch.float32
                with torch.autocast(device_type, enabled=False):
                    return _to_float32(frozen(inputs.to(dtype), *args, **kwargs))
            with torch.autocast(device_type, dtype=autocast_dtype(device_type), enabled=self.amp):
                output = network(inputs, *args, **kwargs)
            return _to_float32(output)

        return forward

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        return self.inferer(inputs, self.wrap(network), *args, **kwargs)


def prepare_network(network: nn.Module, device: str | torch.device, channels_last: bool = False) -> nn.Module:
    """Move ``network`` to ``device``, in channels-last layout when asked."""
    network = network.to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network


SOURCES = ("given", "recorded", "cached", "measured")


@dataclass(frozen=True)
class Settings:
    """Precision and layout a bundle runs with: ``amp`` (reduced precision) and ``channels_last``; ``source`` says
    where the choice came from (:data:`SOURCES`: given in the config, recorded by the run, cached, measured now)."""

    amp: bool
    channels_last: bool
    source: str = field(default="given", compare=False)

    def as_dict(self) -> dict:
        return {"amp": self.amp, "channels_last": self.channels_last, "source": self.source}


CACHE_FILE = "precision.json"


def cache_dir() -> Path:
    """emseg's cache folder: ``$EMSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/emseg``, else ``~/.cache/emseg``."""
    if os.environ.get("EMSEG_CACHE_DIR"):
        return Path(os.environ["EMSEG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emseg"


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def settings_key(network: nn.Module, device: torch.device, shape: list[int], training: bool,
                 candidates: list[Settings]) -> dict:
    """What a measured choice depends on: machine, device, torch version, network, input shape, mode, candidates."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _processor()
    layers = repr(network) + repr([tuple(p.shape) for p in network.parameters()])
    return {"host": socket.gethostname(), "device": f"{device.type}: {device_name}", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "network": hashlib.sha256(layers.encode()).hexdigest()[:16],
            "network_class": type(network).__name__, "input": "x".join(map(str, shape)),
            "mode": "training step" if training else "forward pass",
            "candidates": [[c.amp, c.channels_last] for c in candidates]}


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measured again and rewritten


def _recorded(run_dir: str | Path | None) -> dict | None:
    """The settings a training run recorded in its run.json, if it has any."""
    if not run_dir:
        return None
    try:
        record = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    settings = record.get("settings") if isinstance(record, dict) else None
    if isinstance(settings, dict) and isinstance(settings.get("amp"), bool) \
            and isinstance(settings.get("channels_last"), bool):
        return settings
    return None


def _in_channels(network: nn.Module) -> int:
    for module in network.modules():
        if isinstance(module, _CONVOLUTIONS):
            return module.in_channels
    raise ValueError("cannot tell the network's input channels: it has no convolution")


def _seconds_per_call(network: nn.Module, settings: Settings, shape: list[int], device: torch.device,
                      training: bool, repeats: int) -> float:
    inferer = AutocastInferer(amp=settings.amp, channels_last=settings.channels_last)
    network = prepare_network(copy.deepcopy(network), device, settings.channels_last).train(training)
    x = torch.full(shape, 0.5, device=device)  # no random numbers: measuring must not move the seeded streams
    optimizer = torch.optim.SGD(network.parameters(), lr=0.0) if training else None

    def call():
        if training:
            optimizer.zero_grad()
            output = final_output(inferer(x, network))
            output.float().square().mean().backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                inferer(x, network)
        if device.type == "cuda":
            torch.cuda.synchronize()

    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def measure_settings(network: nn.Module, device: str | torch.device, amp: bool | str, channels_last: bool | str,
                     spatial_shape: list[int], batch_size: int = 1, training: bool = True, repeats: int = 2,
                     run_dir: str | Path | None = None, cache: bool = True) -> Settings:
    """Resolve ``"auto"`` for ``amp`` and/or ``channels_last``; settings given as booleans are kept as they are.

    In order: the settings recorded in ``run_dir``'s run.json (a resumed or rerun training run); the choice cached
    for this machine, device, torch version, network, input shape and mode (:func:`settings_key`, in
    :func:`cache_dir`'s precision.json); else each candidate is timed on ``device`` (a training step: forward,
    backward, optimizer; or a forward pass) with a batch of ``batch_size`` inputs of ``spatial_shape``, the fastest
    chosen and cached (unless ``cache`` is False). The choice, its source and any timings are logged."""
    device = torch.device(device)
    for name, value in (("amp", amp), ("channels_last", channels_last)):
        if value != AUTO and not isinstance(value, bool):
            raise ValueError(f"{name} must be true, false or \"auto\", got {value!r}")
    candidates = [Settings(a, c) for a in ([False, True] if amp == AUTO else [amp])
                  for c in ([False, True] if channels_last == AUTO else [channels_last])]
    if len(candidates) == 1:
        return candidates[0]
    recorded = _recorded(run_dir)
    if recorded is not None:
        chosen = Settings(recorded["amp"] if amp == AUTO else amp,
                          recorded["channels_last"] if channels_last == AUTO else channels_last, "recorded")
        logger.info("amp=%s, channels_last=%s: as recorded in %s", chosen.amp, chosen.channels_last,
                    Path(run_dir) / "run.json")
        return chosen
    shape = [batch_size, _in_channels(network), *spatial_shape]
    key = settings_key(network, device, shape, training, candidates)
    path = cache_dir() / CACHE_FILE
    entry = _read_cache(path).get(_digest(key)) if cache else None
    if isinstance(entry, dict) and isinstance(entry.get("amp"), bool) and isinstance(entry.get("channels_last"), bool):
        chosen = Settings(entry["amp"], entry["channels_last"], "cached")
        logger.info("amp=%s, channels_last=%s: measured on %s before (%s), kept in %s", chosen.amp,
                    chosen.channels_last, key["device"], entry.get("measured", "?"), path)
        return chosen
    seconds = {s: _seconds_per_call(network, s, shape, device, training, repeats) for s in candidates}
    best = min(seconds, key=seconds.get)
    chosen = Settings(best.amp, best.channels_last, "measured")
    logger.info("measured on %s (%s of %s): %s; chose amp=%s, channels_last=%s", device,
                key["mode"], key["input"],
                ", ".join(f"amp={s.amp} channels_last={s.channels_last} {t:.3f}s" for s, t in seconds.items()),
                chosen.amp, chosen.channels_last)
    if cache:
        try:
            entries = _read_cache(path)
            entries[_digest(key)] = {**key, "amp": chosen.amp, "channels_last": chosen.channels_last,
                                     "seconds": {f"amp={s.amp} channels_last={s.channels_last}": round(t, 4)
                                                 for s, t in seconds.items()},
                                     "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
            write_text_atomically(path, json.dumps(entries, indent=1, sort_keys=True))
        except OSError as err:  # a read-only home: the choice holds for this run only
            logger.warning("%s: cannot keep the precision choice (%s); the next run measures again", path, err)
    return chosen
