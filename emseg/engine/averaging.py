"""Weight averaging: validate, select and ship an exponential moving average of the weights, not the last step's.

The weights after one optimizer step carry that step's noise: on ISBI's 3 validation slices, V_rand of the
default U-Net jumped between 0.958 and 0.987 from one validation to the next, so the "best" checkpoint was
partly chance. :class:`WeightAverage` keeps an exponential moving average (EMA) of the parameters and of
BatchNorm's running statistics (PyTorch's ``torch.optim.swa_utils.AveragedModel``), updated after every
training iteration; the bundle's validator scores the average, and the run saves and promotes it.

The average's time constant is given in epochs (``weight_average_epochs``), so it means the same whatever
the data set's size; early on it follows the weights closely (the decay ramps up as ``(1 + n) / (10 + n)``
after ``n`` updates), so a short run is not an average of its random initialisation.
"""

from __future__ import annotations

import itertools

import torch
from ignite.engine import Engine, Events
from torch.optim.swa_utils import AveragedModel


class WeightAverage:
    """Ignite handler keeping an EMA of ``network``'s weights and buffers (see the module docstring).

    Args:
        network: the network being trained (the module itself, not a DDP wrapper).
        epochs: the average's time constant in epochs; 0 or None switches averaging off, and
            :attr:`network` is then ``network`` itself.

    ``network`` (the property) is what to validate and save; ``state_dict``/``load_state_dict`` let a
    checkpoint hold the average, so a resumed run continues it.
    """

    every_rank = True  # under torchrun every rank runs it (emseg.engine.distributed.handlers_of_rank)

    def __init__(self, network: torch.nn.Module, epochs: float | None = 5.0) -> None:
        epochs = float(epochs or 0.0)
        if epochs < 0:
            raise ValueError(f"weight_average_epochs must be >= 0 (0 switches averaging off), got {epochs}")
        self.live = network
        self.epochs = epochs
        self.decay = 0.0  # the long-run decay per iteration; set when training starts (it needs the epoch length)
        # AveragedModel holds the average and its counter (n_averaged) in the checkpoint's format; the update is
        # this class's own, counting on the host: AveragedModel's reads its counter back from the device each step
        self.averaged = AveragedModel(network, use_buffers=True) if epochs else None
        self._count = 0  # updates so far: n_averaged, kept on the host
        if self.averaged is not None:
            self.averaged.module.requires_grad_(False)

    @property
    def network(self) -> torch.nn.Module:
        """The weights to validate and save: the average, or the trained network when averaging is off."""
        return self.live if self.averaged is None else self.averaged.module

    def attach(self, engine: Engine) -> None:
        if self.averaged is not None:
            engine.add_event_handler(Events.STARTED, self._set_decay)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)

    def _set_decay(self, engine: Engine) -> None:
        self.decay = 1.0 - 1.0 / max(1.0, self.epochs * engine.state.epoch_length)

    def _step(self, engine: Engine) -> None:
        self.update(self.live)

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        """Move the average towards ``network``'s weights and buffers (the first update copies them)."""
        count = self._count
        decay = min(self.decay, (1.0 + count) / (10.0 + count))
        averaged = itertools.chain(self.averaged.module.parameters(), self.averaged.module.buffers())
        current = itertools.chain(network.parameters(), network.buffers())
        for mean, value in zip(averaged, current, strict=True):
            value = value.detach().to(mean.device)
            if count == 0 or not mean.is_floating_point():  # BatchNorm's batch counter: kept as the network's
                mean.copy_(value)
            else:
                mean.lerp_(value.to(mean.dtype), 1.0 - decay)
        self.averaged.n_averaged.add_(1)
        self._count = count + 1

    def state_dict(self) -> dict:
        return {} if self.averaged is None else self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.averaged is not None and state:
            self.averaged.load_state_dict(state)
            self._count = int(self.averaged.n_averaged)
