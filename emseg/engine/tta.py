"""Test-time augmentation: average a network's output over flipped and rotated copies of the input."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from monai.inferers import Inferer

# the 8 symmetries of a square: (quarter turns, flip the last axis first)
ALL_TRANSFORMS: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))


def _forward(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1))


def _inverse(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if flip else y


class FlipRotateInferer(Inferer):
    """Run ``inferer`` on each of ``transforms`` (default: all 8 flips/rotations) and average the outputs.

    ``transforms`` is a list of ``[quarter_turns, flip]`` pairs, or ``"all"`` for the 8 symmetries of a square
    (``--tta_transforms all`` on the bundle CLI). Outputs are mapped back before averaging, so the result is
    aligned with the input.
    With ``activation`` (e.g. softmax) the average is taken over probabilities, not logits.
    """

    def __init__(self, inferer: Inferer, transforms: Sequence[Sequence] | str = ALL_TRANSFORMS,
                 activation: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.inferer = inferer
        if isinstance(transforms, str):
            if transforms != "all":
                raise ValueError(f"tta_transforms must be 'all' or a list of [quarter_turns, flip] pairs, "
                                 f"got {transforms!r}")
            transforms = ALL_TRANSFORMS
        self.transforms = [(int(k) % 4, bool(flip)) for k, flip in transforms]
        if not self.transforms:
            raise ValueError("test-time augmentation needs at least one transform, e.g. [[0, false]]")
        self.activation = activation

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = None
        for k, flip in self.transforms:
            output = self.inferer(_forward(inputs, k, flip), network, *args, **kwargs)
            if self.activation is not None:
                output = self.activation(output)
            output = _inverse(output, k, flip)
            total = output if total is None else total + output
        return total / len(self.transforms)
