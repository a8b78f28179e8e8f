"""Segmentation scores used by the bundles' evaluators."""

from __future__ import annotations

from typing import Callable, Sequence

from monai.handlers import from_engine


def channel_output(channel: int, keys: Sequence[str] = ("pred", "label")) -> Callable:
    """Ignite output transform that keeps one channel of one-hot ``pred`` and ``label``.

    Lets MONAI's Dice/confusion-matrix metrics report a single class, e.g. the
    membrane (channel 0) of a two-class EM prediction.
    """
    select = from_engine(list(keys))

    def transform(output):
        preds, labels = select(output)
        return [p[channel : channel + 1] for p in preds], [y[channel : channel + 1] for y in labels]

    return transform
