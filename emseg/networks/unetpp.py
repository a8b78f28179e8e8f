"""MONAI's BasicUNetPlusPlus with deep supervision for training and one head for inference.

MONAI's network always returns a list (one entry per supervised head, or just the
last). This wrapper returns, in training mode with deep supervision, the list of heads
X(0,4)..X(0,1) deepest first (the order MONAI's DeepSupervisionLoss weights), and
otherwise one tensor; in eval mode:
the head at ``inference_depth``. A shallower head is *pruned* as in the UNet++ paper
(L1..L4): only the nodes it depends on are computed, so it is also cheaper.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.nets import BasicUNetPlusPlus

from emseg.errors import require_flag


def final_output(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A network's prediction as one tensor: ``output`` itself, or the last entry of a list, which is what a
    deep-supervision network (MONAI's BasicUNetPlusPlus, even in eval mode) returns as its final head."""
    return output[-1] if isinstance(output, (list, tuple)) else output


class UNetPlusPlus(BasicUNetPlusPlus):
    """UNet++ (Zhou et al. 2018) on MONAI's implementation.

    Args:
        spatial_dims, in_channels, out_channels, features, act, norm, bias, dropout, upsample:
            as for :class:`monai.networks.nets.BasicUNetPlusPlus`.
        deep_supervision: in training mode return the list of every head (deepest first); without it
            training returns the deepest head as a tensor, like eval mode with ``inference_depth=4``.
        inference_depth: which head (1..4) eval mode returns; lower depths prune the network.
    """

    depth = 4

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        deep_supervision: bool = True,
        inference_depth: int = 4,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
    ) -> None:
        if not 1 <= inference_depth <= self.depth:
            raise ValueError(f"inference_depth must be 1..{self.depth}, got {inference_depth}")
        require_flag(deep_supervision, "deep_supervision")
        super().__init__(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, features=features,
            deep_supervision=deep_supervision, act=act, norm=norm, bias=bias, dropout=dropout, upsample=upsample,
        )
        self.inference_depth = inference_depth

    def heads(self, x: torch.Tensor, depth: int) -> list[torch.Tensor]:
        """Outputs of the heads X(0,1)..X(0,depth), computing only the nodes they need."""
        nodes: dict[tuple[int, int], torch.Tensor] = {(0, 0): self.conv_0_0(x)}
        for j in range(1, depth + 1):  # each step adds one encoder level and the diagonal it closes
            nodes[(j, 0)] = getattr(self, f"conv_{j}_0")(nodes[(j - 1, 0)])
            for i in range(j - 1, -1, -1):
                k = j - i
                same_level = torch.cat([nodes[(i, m)] for m in range(k)], dim=1)
                nodes[(i, k)] = getattr(self, f"upcat_{i}_{k}")(nodes[(i + 1, k - 1)], same_level)
        return [getattr(self, f"final_conv_0_{k}")(nodes[(0, k)]) for k in range(1, depth + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.training:
            outputs = self.heads(x, self.depth)
            return outputs[::-1] if self.deep_supervision else outputs[-1]
        return self.heads(x, self.inference_depth)[-1]
