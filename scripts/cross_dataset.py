"""Membrane Dice of an ISBI-trained bundle on another microscope's labelled slices (EPFL hippocampus, FIB-SEM).

    python scripts/cross_dataset.py --bundle bundles/unet --dataset_dir ../shared/data/epfl-hippocampus-multiclass

Runs the bundle's own inference (MONAI's CLI, promoted weights or ``--run_name``'s, no TTA) on the EPFL test slices, then scores its
membrane probability (channel 0 of an ISBI bundle) against the EPFL ``membranes`` masks, per slice, at threshold
0.5 and at the threshold best over the slices together (the latter is an upper bound: it is chosen on the scored
slices). No rescaling: ISBI pixels are 4 nm, EPFL's 5 nm.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from emseg.data import datalist
from emseg.io import read_volume

THRESHOLDS = np.round(np.arange(0.1, 0.95, 0.05), 2)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    total = prediction.sum() + truth.sum()
    return float(2 * np.logical_and(prediction, truth).sum() / total) if total else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="bundles/unet")
    parser.add_argument("--dataset_dir", required=True, help="the EPFL data set (test/slices, test/membranes)")
    parser.add_argument("--run_name", help="a training run's best weights instead of the bundle's promoted model")
    args = parser.parse_args()
    bundle = Path(args.bundle).resolve()
    items = datalist("epfl", args.dataset_dir, "test", None, None, None, 128, [1, 1], False)
    membrane = 1  # EPFL class index of "membranes" (emseg.data.epfl.EPFL_CLASSES order)
    truth = np.stack([np.asarray(item["label"])[0] == membrane for item in items])
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "membrane.tif"
        command = [sys.executable, "-m", "monai.bundle", "run",
                   "--config_file", str(bundle / "configs" / "inference.json"),
                   "--input_path", str(Path(args.dataset_dir) / "test" / "slices"), "--output_path", str(output),
                   "--output_channel", "0", *(["--run_name", args.run_name] if args.run_name else [])]
        inference = subprocess.run(command)
        if inference.returncode:  # its own last line said what was wrong
            return inference.returncode
        probability = read_volume(output)
    fixed = [dice(p > 0.5, t) for p, t in zip(probability, truth)]
    pooled = {float(t): dice(probability > t, truth) for t in THRESHOLDS}
    best = max(pooled, key=pooled.get)
    print("| slice | membrane Dice at 0.5 |\n|---|---|")
    for item, value in zip(items, fixed):
        print(f"| {item['name']} | {value:.3f} |")
    print(f"\nmean over {len(fixed)} slices at 0.5: {np.nanmean(fixed):.3f}; pooled at 0.5: {dice(probability > 0.5, truth):.3f}; "
          f"pooled at the best threshold {best}: {pooled[best]:.3f} (chosen on these slices)")
    print(f"membrane pixels: EPFL labels {truth.mean():.3f}, predicted at 0.5 {(probability > 0.5).mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
