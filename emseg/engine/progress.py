"""Progress you can see: a bar with rate and time left on a terminal, a log line where output goes to a file.

:class:`ProgressBar` is a handler for MONAI's engines (training epochs, validation); :func:`progress` wraps any
iterable (inference slice by slice). Both stay quiet on every rank but the first of a distributed run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)

BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} {percentage:3.0f}%|{bar}{postfix} [{elapsed}<{remaining}, {rate_fmt}]"


def _first_rank() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def shows_bars() -> bool:
    """Bars on a terminal, on the first rank only; log lines elsewhere (files, CI, captured output)."""
    return _first_rank() and sys.stderr.isatty()


class ProgressBar:
    """Ignite's tqdm bar over an engine's iterations (``description``: e.g. ``training`` or ``validation``),
    with ``output_transform``'s value beside it as ``loss``; where no bar shows, one log line when the engine
    starts, so a long validation is not silent."""

    def __init__(self, description: str, output_transform: Callable | None = None) -> None:
        self.description = description
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        if shows_bars():
            from ignite.handlers import ProgressBar as IgniteProgressBar

            transform = self.output_transform
            bar = IgniteProgressBar(desc=self.description, bar_format=BAR_FORMAT)
            bar.attach(engine, output_transform=(lambda output: {"loss": transform(output)}) if transform else None)

    def _started(self, engine: Engine) -> None:
        if _first_rank():
            epochs = engine.state.max_epochs
            what = f"{epochs} epochs of {engine.state.epoch_length} iterations" if epochs > 1 else (
                f"{engine.state.epoch_length} iterations")
            logger.info("%s: %s", self.description, what)


def progress(items: Iterable, description: str, total: int | None = None, unit: str = "slice") -> Iterator:
    """``items`` with a bar (rate, time left) on a terminal; as they are elsewhere."""
    if not shows_bars():
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=description, total=total, unit=unit, dynamic_ncols=True)
