"""Shared fixtures: the real EM data in ../shared/data (override with EMSEG_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
ISBI_DIR = SHARED_DATA / "isbi2012"
EPFL_DIR = SHARED_DATA / "epfl-hippocampus-multiclass"


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    """Folder with the real ISBI 2012 stacks."""
    if not (ISBI_DIR / "train-volume.tif").is_file():
        pytest.fail(f"real ISBI data not found in {ISBI_DIR}; set EMSEG_SHARED_DATA to the shared data folder")
    return ISBI_DIR


@pytest.fixture(scope="session")
def isbi_volumes(isbi_dir) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) uint8 volumes of the ISBI training stack, read with tifffile directly."""
    import tifffile

    return tifffile.imread(isbi_dir / "train-volume.tif"), tifffile.imread(isbi_dir / "train-labels.tif")


@pytest.fixture(scope="session")
def epfl_dir() -> Path:
    if not (EPFL_DIR / "train" / "slices").is_dir():
        pytest.fail(f"real EPFL data not found in {EPFL_DIR}; set EMSEG_SHARED_DATA to the shared data folder")
    return EPFL_DIR


def training_losses(network, loss_fn, image, target, steps: int, lr: float) -> list[float]:
    """Loss of each of ``steps`` Adam steps of ``network`` on one batch."""
    import torch

    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(network(image), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
