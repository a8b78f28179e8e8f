"""Learning from unlabelled slices too: a mean teacher (Tarvainen & Valpola 2017) on the bundle's weight average.

Each training iteration adds, to the labelled batch's loss, a consistency loss on a batch of unlabelled crops:
the student (the network being trained) sees them with an intensity perturbation (gain, offset, Gaussian noise:
another staining, another detector), the teacher (the bundle's weight average,
:class:`emseg.engine.averaging.WeightAverage`, an exponential moving average of the student) sees them as they
are, and the mean squared difference of their class probabilities is minimised. Its weight ramps up over
``rampup_epochs`` (the teacher is its random initialisation at first). The student's batch norm also meets the
unlabelled slices' statistics, so a model from another microscope adapts its normalisation to the lab's.

The bundle key ``unlabelled`` (a stack file or a folder of slices; null: off) switches it on, for training from
scratch and for fine-tuning alike; ``consistency_weight`` sets the weight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from monai.engines.utils import IterationEvents
from monai.transforms import (
    Compose,
    EnsureTyped,
    NormalizeIntensityd,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropSamplesd,
)
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from emseg.engine.precision import autocast_dtype
from emseg.io import VolumeError, read_volume
from emseg.networks import final_output

logger = logging.getLogger(__name__)


def unlabelled_items(source: str | Path | None, min_size: Sequence[int] | None = None) -> list[dict]:
    """``{"image": (1, H, W) float32, "name"}`` per slice of ``source`` (a stack file or a folder of slices); none
    for ``source`` None. Slices smaller than ``min_size`` (the patch size) are refused, naming the file."""
    if source in (None, "", "None", "null"):
        return []
    volume = read_volume(source)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise VolumeError(f"{source}: unlabelled images must be grey slices (Z, H, W), found shape {volume.shape}")
    if min_size is not None and any(s < m for s, m in zip(volume.shape[-2:], min_size)):
        raise VolumeError(f"{source}: slices are {volume.shape[-2:]}, smaller than patch_size {list(min_size)}")
    return [{"image": np.asarray(s, dtype=np.float32)[None], "name": f"unlabelled_{i:03d}"} for i, s in enumerate(volume)]


def perturb(images: torch.Tensor, noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random gain (0.8-1.2), offset (-0.2-0.2) and Gaussian noise of standard deviation ``noise`` on
    images normalised to zero mean and unit variance."""
    shape = (images.shape[0],) + (1,) * (images.ndim - 1)
    gain = torch.empty(shape).uniform_(0.8, 1.2, generator=generator).to(images)
    offset = torch.empty(shape).uniform_(-0.2, 0.2, generator=generator).to(images)
    return images * gain + offset + noise * torch.randn(images.shape, generator=generator).to(images)


class MeanTeacher:
    """The iteration of a SupervisedTrainer with the mean teacher's consistency loss (see the module docstring).

    Args:
        unlabelled: a stack file or a folder of unlabelled slices; None switches it off (:attr:`active` False).
        teacher: the weight average's network (``@weight_average.network``).
        weight: the consistency loss's weight once ramped up.
        rampup_epochs: epochs over which the weight rises from 0 (sigmoid ramp of the paper).
        patch_size, crops_per_slice, batch_size: the unlabelled batch, like the labelled one.
        noise: standard deviation of the student's noise (:func:`perturb`).
        amp: autocast the teacher as the bundle's inferer autocasts the student.
    """

    def __init__(self, unlabelled: str | Path | None, teacher: nn.Module, weight: float = 1.0,
                 rampup_epochs: float = 5.0, patch_size: Sequence[int] = (256, 256), crops_per_slice: int = 4,
                 batch_size: int = 8, noise: float = 0.1, amp: bool = False) -> None:
        if float(weight) < 0 or float(rampup_epochs) < 0:
            raise ValueError(f"consistency_weight and its ramp-up must be >= 0, got {weight} and {rampup_epochs}")
        self.source = unlabelled
        self.items = unlabelled_items(unlabelled, patch_size)
        self.teacher, self.weight, self.rampup_epochs = teacher, float(weight), float(rampup_epochs)
        self.noise, self.amp = float(noise), bool(amp)
        transform = Compose([
            EnsureTyped(keys="image"), NormalizeIntensityd(keys="image"),
            RandSpatialCropSamplesd("image", roi_size=list(patch_size), num_samples=crops_per_slice, random_size=False),
            RandFlipd("image", prob=0.5, spatial_axis=0), RandFlipd("image", prob=0.5, spatial_axis=1),
            RandRotate90d("image", prob=0.75, max_k=3)])
        self.loader = DataLoader(Dataset(self.items, transform), batch_size=max(1, batch_size // crops_per_slice),
                                 shuffle=True, num_workers=0) if self.items else None
        self._batches = None

    @property
    def active(self) -> bool:
        return bool(self.items)

    def describe(self) -> dict | None:
        """What a run records: the source and its slice count."""
        return {"source": str(self.source), "slices": len(self.items), "weight": self.weight} if self.active else None

    def _next(self, device: torch.device) -> torch.Tensor:
        if self._batches is None:
            self._batches = iter(self.loader)
        try:
            batch = next(self._batches)
        except StopIteration:
            self._batches = iter(self.loader)
            batch = next(self._batches)
        images = batch["image"]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        return images.to(device)

    def ramp(self, engine: Engine) -> float:
        """The consistency weight at this iteration: ``weight`` x exp(-5 (1 - t)^2), t the fraction of the ramp."""
        if self.rampup_epochs <= 0:
            return self.weight
        done = min(1.0, engine.state.iteration / (self.rampup_epochs * engine.state.epoch_length))
        return self.weight * float(np.exp(-5.0 * (1.0 - done) ** 2))

    def _teacher(self, images: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        with torch.no_grad(), torch.autocast(images.device.type, dtype=autocast_dtype(images.device.type),
                                             enabled=self.amp):
            return torch.softmax(final_output(self.teacher(images)).float(), dim=1)

    def step(self, engine: Engine, batchdata: dict) -> dict:
        """One training iteration: the bundle's loss on the labelled batch plus the weighted consistency loss. It
        fires MONAI's iteration events as ``SupervisedTrainer`` does (its handlers, decollation included, run)."""
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        engine.state.output = output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        output[Keys.PRED] = engine.inferer(inputs, engine.network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        supervised = engine.loss_function(output[Keys.PRED], targets).mean()
        unlabelled = self._next(inputs.device)
        target = self._teacher(unlabelled)
        student = torch.softmax(final_output(engine.inferer(perturb(unlabelled, self.noise), engine.network)), dim=1)
        consistency = F.mse_loss(student.float(), target)
        loss = supervised + self.ramp(engine) * consistency
        output[Keys.LOSS] = loss
        output["supervised_loss"], output["consistency_loss"] = supervised.detach(), consistency.detach()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def iteration_update(mean_teacher: MeanTeacher | None):
    """The trainer's ``iteration_update``: the mean teacher's step when it is on, else None (MONAI's own)."""
    return mean_teacher.step if mean_teacher is not None and mean_teacher.active else None
