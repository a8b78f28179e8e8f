"""The training feed: batches from MONAI's DataLoader or cut and augmented on the device, alike in what they hold."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, copy_bundles, mlflow_runs, monai_bundle, tiny_training, train_bundle
from monai.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from emseg.engine.feed import DeviceFeed, feed_name, resolve_feed
from emseg.engine.paths import load_config
from emseg.transforms import PresetKeys, batched_augmentation

TRAIN = REPO_ROOT / "bundles" / "unet" / "configs" / "train.json"


def bundle_feed(tmp_path: Path, isbi_dir: Path, **values):
    parser = load_config(TRAIN, {"dataset_dir": str(isbi_dir), "download": False, "patch_size": [64, 64],
                                 "batch_size": 4, "crops_per_slice": 2, "features": [4, 4, 8, 8, 16, 4],
                                 "output_dir": str(tmp_path / "run"), "ckpt_dir": str(tmp_path / "models"),
                                 "tracking_uri": f"sqlite:///{tmp_path / 'mlruns.db'}", **values})
    parser.get_parsed_content("initialize")
    return parser


@pytest.mark.parametrize("loss", ["dice_ce", "border_ce"])
def test_device_feed_gives_the_loaders_batches_in_number_size_and_keys(tmp_path, isbi_dir, loss):
    loader = bundle_feed(tmp_path, isbi_dir, feed="loader", loss_name=loss).get_parsed_content("train#feed")
    device = bundle_feed(tmp_path, isbi_dir, feed="device", loss_name=loss).get_parsed_content("train#feed")
    assert (feed_name(loader), feed_name(device)) == ("loader", "device")
    assert len(device) == len(loader) == 11  # ISBI's 22 training slices, 2 per batch
    ours, theirs = next(iter(device)), next(iter(loader))
    for key in ("image", "label"):
        assert ours[key].shape == theirs[key].shape and ours[key].dtype == theirs[key].dtype, key
    assert set(ours["label"][:, 0].unique().tolist()) <= {0.0, 1.0}
    if loss == "border_ce":  # its weight map packed as target channel 1, as the loader packs it
        assert ours["label"].shape[1] == 2 and float(ours["label"][:, 1].min()) > 0
    assert abs(float(ours["image"].mean())) < 1.0  # the deterministic transforms ran: normalised intensities


def test_a_seed_gives_the_same_batches(tmp_path, isbi_dir):
    def epoch(seed):
        torch.manual_seed(0)  # the loader's sampler draws the slice order from torch's generator, as for the loader
        feed = bundle_feed(tmp_path, isbi_dir, feed="device", seed=seed, augmentation="em").get_parsed_content(
            "train#feed")
        return [b["image"] for b in feed]

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def slices_numbered(count: int, size: int) -> list[dict]:
    """Slices whose image is their index everywhere, so a patch tells which slice it came from."""
    return [{"image": torch.full((1, size, size), float(i)), "label": torch.zeros(1, size, size)}
            for i in range(count)]


def test_each_rank_takes_its_share_of_slices_under_a_distributed_sampler():
    """Under torchrun the loader's DistributedSampler shards the slices: over both ranks each slice comes once per
    epoch, and the order changes with the epoch the trainer gives the sampler (reshuffle_each_epoch)."""
    slices = slices_numbered(8, 40)
    spec = batched_augmentation("none", (32, 32))
    seen = {}
    for rank in (0, 1):
        sampler = DistributedSampler(list(range(8)), num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(list(range(8)), batch_size=2, sampler=sampler)
        feed = DeviceFeed(slices, loader.batch_sampler, spec, PresetKeys(), (32, 32), 1, "cpu", seed=0)
        seen[rank] = []
        for epoch in (1, 2):
            sampler.set_epoch(epoch)
            seen[rank].append([int(b["image"][n].mean()) for b in feed for n in range(len(b["image"]))])
    for epoch in (0, 1):
        assert sorted(seen[0][epoch] + seen[1][epoch]) == list(range(8))
    assert seen[0][0] != seen[0][1]


def test_class_centred_crops_centre_on_the_drawn_class():
    """crop_ratios: each crop is centred on a pixel of a class drawn with the ratios among the classes present,
    a rare class (a few pixels, listed) and a common one (found by chance) alike."""
    label = torch.zeros(1, 120, 120)
    label[0, 30:90, 30:90] = 1  # common: 25% of the slice
    rare = [(40, 50), (60, 61), (75, 44)]
    for r, c in rare:
        label[0, r, c] = 2  # rare: 3 pixels
    slices = [{"image": torch.randn(1, 120, 120), "label": label}, {"image": torch.randn(1, 120, 120),
                                                                    "label": torch.zeros(1, 120, 120)}]
    loader = DataLoader([0, 1], batch_size=2)
    for ratios, wanted in (([0, 0, 1], 2), ([0, 1, 0], 1)):
        feed = DeviceFeed(slices, loader.batch_sampler, batched_augmentation("none", (41, 41)), PresetKeys(),
                          (41, 41), 50, "cpu", seed=0, crop_ratios=ratios)
        batch = next(iter(feed))
        centres = batch["label"][:50, 0, 20, 20]  # slice 0's crops, centred (no pixel near the border)
        assert torch.all(centres == wanted), (ratios, centres.unique())
        # slice 1 has neither class: its crops fall anywhere, as MONAI's crop skips an absent class
        assert batch["label"][50:].shape == (50, 1, 41, 41)


def test_a_slice_smaller_than_the_crop_is_reflected_to_its_size():
    slices = slices_numbered(2, 70)
    loader = DataLoader([0, 1], batch_size=2)
    spec = batched_augmentation("unet", (64, 64))
    feed = DeviceFeed(slices, loader.batch_sampler, spec, PresetKeys(), (124, 124), 2, "cpu", seed=0)
    batch = next(iter(feed))
    assert batch["image"].shape == (4, 1, 64, 64)


def test_feed_auto_is_the_loader_on_the_cpu_and_the_device_elsewhere():
    assert resolve_feed("auto", "cpu") == "loader"
    assert resolve_feed("auto", "cuda:0") == "device"
    assert resolve_feed("device", "cpu") == "device"
    with pytest.raises(ValueError, match="feed must be one of auto, loader, device, got 'fast'"):
        resolve_feed("fast", "cpu")


def test_transforms_of_a_labs_own_are_refused_by_the_device_feed_and_kept_by_auto(tmp_path, isbi_dir):
    own = [{"_target_": "RandSpatialCropSamplesd", "keys": ["image", "label"], "roi_size": [64, 64],
            "num_samples": 2, "random_size": False}]
    parser = bundle_feed(tmp_path, isbi_dir, feed="device", **{"train#random_transforms": own})
    with pytest.raises(RuntimeError) as failed:  # MONAI's config parser wraps the builder's error
        parser.get_parsed_content("train#feed")
    assert "train#random_transforms: the device feed augments by the preset's name" in str(failed.value.__cause__)
    parser = bundle_feed(tmp_path, isbi_dir, feed="auto", device="$torch.device('meta')",
                         **{"train#random_transforms": own})
    assert feed_name(parser.get_parsed_content("train#feed")) == "loader"


def test_an_unknown_feed_stops_the_bundle_cli_with_one_line(tmp_path, isbi_dir):
    result = monai_bundle("run", "training", "--config_file", str(TRAIN),
                          *tiny_training(dataset_dir=isbi_dir, feed="fast"), "--output_dir", str(tmp_path / "run"),
                          "--ckpt_dir", str(tmp_path / "models"), "--tracking_uri", f"sqlite:///{tmp_path}/m.db",
                          cwd=tmp_path, check=False)
    line = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert result.returncode != 0 and "feed must be one of auto, loader, device, got 'fast'" in line, line


@pytest.mark.slow
def test_two_trainings_on_the_device_feed_with_one_seed_end_alike(tmp_path, isbi_dir):
    """Through the bundle CLI with --feed device on this CPU: the same seed gives the same weights bit for bit, and
    the run records where its batches came from."""
    project = copy_bundles(tmp_path / "project", ["unet"])
    runs = project / "bundles" / "unet" / "runs"
    for name in ("first", "second"):
        train_bundle(project, "unet", tiny_training(dataset_dir=isbi_dir, run_name=name, feed="device", epochs=2,
                                                    epoch_length=3, augmentation="em"), cwd=tmp_path)
    first, second = (torch.load(runs / name / "checkpoint_last.pt", weights_only=False)["model"]
                     for name in ("first", "second"))
    assert all(torch.equal(value, second[key]) for key, value in first.items() if torch.is_tensor(value))
    _, found = mlflow_runs(project, "emseg-unet")
    assert {r.data.params["feed"] for r in found} == {"device"}
    assert len({r.data.metrics["train_loss"] for r in found}) == 1
    assert np.isfinite([r.data.metrics["train_loss"] for r in found]).all()


@pytest.mark.parametrize("values", [{"augmentation": "em"}, {"loss_name": "border_ce", "crop_ratios": "uniform"},
                                    {"augmentation": "unet", "augmentation_params": {"intensity": True}}])
def test_batches_are_made_without_reading_a_value_back_from_the_device(tmp_path, isbi_dir, values):
    """On PyTorch's meta device tensors hold no values, so any read back (.item(), a branch on a tensor, a copy to
    the host) fails: a whole epoch made there shows the host never waits on the device for a batch."""
    parser = bundle_feed(tmp_path, isbi_dir, feed="device", device="$torch.device('meta')", **values)
    feed = parser.get_parsed_content("train#feed")
    batches = list(feed)
    assert len(batches) == 11 and all(b["image"].device.type == "meta" for b in batches)
    assert batches[0]["image"].shape == (4, 1, 64, 64)


def test_a_preset_without_a_batched_form_trains_with_the_loader_under_auto(tmp_path, isbi_dir, monkeypatch):
    """A lab's new preset registered without batched=...: auto keeps the DataLoader, device says what to do."""
    from emseg.transforms import PRESETS

    monkeypatch.setitem(PRESETS, "unet", dataclasses.replace(PRESETS["unet"], batched=None))
    parser = bundle_feed(tmp_path, isbi_dir, feed="auto", device="$torch.device('meta')")
    assert feed_name(parser.get_parsed_content("train#feed")) == "loader"
    parser = bundle_feed(tmp_path, isbi_dir, feed="device")
    with pytest.raises(RuntimeError) as failed:
        parser.get_parsed_content("train#feed")
    assert "augmentation preset 'unet' has no batched form for the device" in str(failed.value.__cause__)
    assert "--feed loader" in str(failed.value.__cause__)
