"""Print the time the training data pipeline takes per batch for each augmentation preset.

    python scripts/benchmark_augmentation.py [--bundle bundles/unet] [--batches 20] [--dataset_dir DIR]

Builds the bundle's own ``train#dataloader`` (cached deterministic transforms, then random
crops and the preset) and times iterating it; compare with the training step that
scripts/benchmark.py measures as (c).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from monai.bundle import ConfigParser

from emseg.transforms import PRESETS


def main() -> None:
    default = Path(os.environ.get("EMSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--bundle", default="bundles/unet")
    args.add_argument("--batches", type=int, default=20)
    args.add_argument("--dataset_dir", default=str(default / "isbi2012"))
    opts = args.parse_args()
    for preset in PRESETS:
        for loss in ("dice_ce", "border_ce") if preset == "em" else ("dice_ce",):
            parser = ConfigParser()
            parser.read_config(os.path.join(opts.bundle, "configs", "train.json"))
            parser.update({"dataset_dir": opts.dataset_dir, "download": False, "augmentation": preset,
                           "loss_name": loss, "bundle_root": opts.bundle})
            loader = parser.get_parsed_content("train#dataloader")
            batches, start, count = iter(loader), time.perf_counter(), 0
            while count < opts.batches:
                try:
                    batch = next(batches)
                except StopIteration:
                    batches = iter(loader)
                    continue
                count += 1
            seconds = (time.perf_counter() - start) / count
            shape = tuple(batch["image"].shape)
            print(f"{preset:6} {loss:9} {seconds * 1000:7.1f} ms per batch of {shape}")


if __name__ == "__main__":
    main()
