"""Where training batches come from (the bundle key ``feed``).

- ``loader``: MONAI's ``DataLoader`` over the bundle's ``CacheDataset``: each slice's deterministic transforms
  cached, then crops and the augmentation preset per sample (MONAI dictionary transforms, in worker processes
  where ``num_workers`` gives them), batched and copied to the device.
- ``device``: :class:`DeviceFeed`: the same slices, after the same deterministic transforms, cached once on the
  device the network trains on; each batch is cut there and augmented there as a whole
  (:mod:`emseg.transforms.batched`: the preset's spatial transforms in one resampling, its intensities), with the
  random numbers drawn on the host from the bundle's ``seed`` and nothing read back, so the host keeps ahead of a
  fast GPU.
- ``auto``: ``device`` where the network trains on an accelerator, ``loader`` on the CPU (there the network is
  the bound: the loader supplies many times its rate; ``scripts/benchmark.py`` (h) shows both).

Either feed takes the same slices in the same order (the loader's sampler, a ``DistributedSampler`` under
torchrun included) and gives batches of the same size and keys, so the learning rate means the same. A
``train#random_transforms`` of a lab's own is MONAI transforms the device feed cannot run: ``device`` refuses it,
``auto`` falls back to the loader.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, RandomizableTrait, Transform

from emseg.losses import get_loss
from emseg.transforms import (
    PRESETS,
    PresetKeys,
    batched_augmentation,
    crop_size,
    crop_weights,
    random_transforms,
)
from emseg.transforms.batched import Batched, augment, device_generator

logger = logging.getLogger(__name__)

FEEDS = ("auto", "loader", "device")
RARE = 0.01  # a class on fewer than this share of a slice's pixels: its pixels are listed, not found by chance


def resolve_feed(feed: str, device) -> str:
    """``loader`` or ``device`` for the bundle key ``feed`` on ``device``."""
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {', '.join(FEEDS)}, got {feed!r} (e.g. --feed device)")
    if feed == "auto":
        return "loader" if torch.device(device).type == "cpu" else "device"
    return feed


def training_feed(feed: str, loader, augmentation: str, patch_size: Sequence[int], crops_per_slice: int,
                  num_classes: int, loss_name: str, device, seed: int, crop_ratios=None,
                  augmentation_params: dict | None = None):
    """The trainer's batches: ``loader`` itself, or a :class:`DeviceFeed` over its data set and sampler."""
    chosen = resolve_feed(feed, device)
    if chosen == "loader":
        return loader
    dataset = loader.dataset
    transforms = list(dataset.transform.transforms)
    first_random = next((i for i, t in enumerate(transforms)
                         if isinstance(t, RandomizableTrait) or not isinstance(t, Transform)), len(transforms))
    loss = get_loss(loss_name)
    expected = [*random_transforms(augmentation, patch_size, crops_per_slice, num_classes, crop_ratios,
                                   augmentation_params, loss_name), *loss.pack()]
    if [type(t) for t in transforms[first_random:]] != [type(t) for t in expected]:
        problem = ("train#random_transforms: the device feed augments by the preset's name (augmentation "
                   f"{augmentation!r}) and cannot run other transforms; set --feed loader to use them")
    elif PRESETS[augmentation].batched is None:
        problem = (f"augmentation preset '{augmentation}' has no batched form for the device (its register(..., "
                   "batched=...)); set --feed loader")
    else:
        problem = None
    if problem is not None:
        if feed == "auto":
            logger.info("training batches made by the DataLoader (feed loader): %s", problem.split(";")[0])
            return loader
        raise ValueError(problem)
    deterministic = Compose(transforms[:first_random])
    spec = batched_augmentation(augmentation, patch_size, **(augmentation_params or {}))
    keys = PresetKeys(("image",), ("label",), tuple(loss.extra_keys))
    slices = [deterministic(dict(item)) for item in dataset.data]
    logger.info("training batches: %d slices cached on %s, cut and augmented there (feed device; the DataLoader "
                "and its workers are not used)", len(slices), device)
    return DeviceFeed(slices, loader.batch_sampler, spec, keys,
                      crop_size(augmentation, patch_size, **(augmentation_params or {})), crops_per_slice, device,
                      seed, crop_ratios=None if crop_ratios is None else crop_weights(crop_ratios, num_classes),
                      pack=loss.pack())


def feed_name(feed) -> str:
    """What a trainer's batches come from, for the run's record: ``device`` or ``loader``."""
    return "device" if isinstance(feed, DeviceFeed) else "loader"


def _plain(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class DeviceFeed:
    """Training batches cut and augmented on ``device`` from ``slices`` (dicts of channel-first (C, H, W) arrays
    after the deterministic transforms) cached there.

    Each batch of slice indices from ``batch_sampler`` gives ``crops_per_slice`` crops of ``crop`` pixels per
    slice, anywhere or (``crop_ratios``, a weight per class) centred on a pixel of a class drawn with those weights
    among the classes present, as MONAI's ``RandCropByLabelClassesd``; ``spec`` augments them into patches;
    ``pack`` (the loss's) then packs extra keys into the target. One host generator seeded with ``seed`` (and the
    rank) draws every crop position and augmentation parameter."""

    def __init__(self, slices: Sequence[dict], batch_sampler, spec: Batched, keys: PresetKeys, crop: Sequence[int],
                 crops_per_slice: int, device, seed: int, crop_ratios: Sequence[float] | None = None,
                 pack: Sequence = ()) -> None:
        self.device, self.spec, self.keys = torch.device(device), spec, keys
        self.crop, self.crops_per_slice = tuple(int(c) for c in crop), int(crops_per_slice)
        self.batch_sampler = batch_sampler
        self.pack = Compose(list(pack)) if pack else None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if distributed else 0
        self.generator = torch.Generator().manual_seed(int(seed) + 1_000_003 * rank)
        self.noise = device_generator(self.device, int(seed) + 1_000_003 * rank + 1)
        self.names = [*keys.image, *keys.label, *keys.weight]
        try:
            self.slices = [{k: self._padded(_plain(item[k])).to(self.device) for k in self.names} for item in slices]
        except torch.OutOfMemoryError as error:
            raise RuntimeError(f"feed device: the {len(slices)} training slices do not fit on {self.device} "
                               f"({error}); set --feed loader") from None
        self.ratios = None if crop_ratios is None else torch.tensor(crop_ratios, dtype=torch.float64)
        if self.ratios is not None:
            labels = [np.asarray(_plain(item[keys.label[0]])[0].cpu()).astype(np.int16) for item in slices]
            self._labels = [self._padded(torch.from_numpy(label)[None])[0].numpy() for label in labels]
            self._counts = [np.bincount(label[label >= 0].ravel(), minlength=len(crop_ratios))[:len(crop_ratios)]
                            for label in self._labels]
            self._listed: dict[tuple[int, int], np.ndarray] = {}

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """A slice smaller than the crop, reflected on each side to the crop's size (MONAI's crop would be smaller)."""
        short = [max(0, c - s) for c, s in zip(self.crop, x.shape[-2:])]
        if not any(short):
            return x
        pad = (short[1] // 2, short[1] - short[1] // 2, short[0] // 2, short[0] - short[0] // 2)
        mode = "reflect" if all(p < s for p, s in zip(pad, (x.shape[-1],) * 2 + (x.shape[-2],) * 2)) else "replicate"
        return F.pad(x[None].float(), pad, mode=mode)[0].to(x.dtype)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # a DistributedSampler gets its epoch from the trainer (multi_gpu_train.json: reshuffle_each_epoch)
        for indices in self.batch_sampler:
            yield self.batch(indices)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The patches of the slices ``indices``: their crops, augmented, extra keys packed."""
        corners = [(i, *self._corner(i)) for i in indices for _ in range(self.crops_per_slice)]
        height, width = self.crop
        crops = {k: torch.stack([self.slices[i][k][:, r:r + height, c:c + width] for i, r, c in corners])
                 for k in self.names}
        out = augment(crops, self.spec, self.keys, self.generator, self.noise)
        if self.pack is not None:
            packed = [self.pack({k: out[k][n] for k in self.names}) for n in range(len(corners))]
            out = {k: torch.stack([_plain(p[k]) for p in packed]) for k in packed[0]}
        return out

    def _corner(self, index: int) -> tuple[int, int]:
        """The top-left pixel of a random crop of slice ``index``."""
        height, width = self.slices[index][self.names[0]].shape[-2:]
        spare = (height - self.crop[0], width - self.crop[1])
        if self.ratios is None:
            return tuple(int(torch.randint(0, s + 1, (), generator=self.generator)) for s in spare)
        row, column = self._class_pixel(index)
        return (min(max(row - self.crop[0] // 2, 0), spare[0]), min(max(column - self.crop[1] // 2, 0), spare[1]))

    def _class_pixel(self, index: int) -> tuple[int, int]:
        """A pixel of a class drawn with the crop ratios among the classes present in slice ``index``."""
        counts, label = self._counts[index], self._labels[index]
        weights = self.ratios * torch.from_numpy(counts > 0)
        if float(weights.sum()) <= 0:  # no class of a positive ratio here: anywhere
            return tuple(int(torch.randint(0, s, (), generator=self.generator)) for s in label.shape)
        chosen = int(torch.multinomial(weights, 1, generator=self.generator))
        if counts[chosen] < RARE * label.size:
            listed = self._listed.get((index, chosen))
            if listed is None:
                listed = self._listed[(index, chosen)] = np.flatnonzero(label == chosen).astype(np.int64)
            flat = int(listed[int(torch.randint(0, len(listed), (), generator=self.generator))])
            return divmod(flat, label.shape[1])
        while True:  # a common class: a pixel drawn at random is one within a few tries (at most 1/RARE on average)
            flat = torch.randint(0, label.size, (64,), generator=self.generator).numpy()
            hits = flat[label.ravel()[flat] == chosen]
            if hits.size:
                return divmod(int(hits[0]), label.shape[1])
