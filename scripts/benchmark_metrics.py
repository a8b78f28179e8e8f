"""Print how long the ISBI challenge scores take on real validation slices.

    python scripts/benchmark_metrics.py [--data ../shared/data/isbi2012] [--slices 22 23 24] [--repeat 3]
        [--probabilities probs.tif]

Scores the interior probabilities of a trained model (``--probabilities``: a stack over the
whole training volume, as inference.json writes it) or, without one, a noisy map built from
each label, at all 11 thresholds, as validation does.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from emseg.evaluation import THRESHOLDS, challenge, challenge_scores, pixel_scores
from emseg.io import read_volume


def main() -> None:
    default = Path(os.environ.get("EMSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--data", default=str(default / "isbi2012"))
    args.add_argument("--slices", type=int, nargs="+", default=[22, 23, 24])
    args.add_argument("--repeat", type=int, default=3)
    args.add_argument("--probabilities", default=None, help="probability stack of the whole training volume")
    opts = args.parse_args()
    labels = (read_volume(Path(opts.data) / "train-labels.tif")[opts.slices] > 0).astype(np.uint8)
    if opts.probabilities:
        probabilities = read_volume(opts.probabilities)[opts.slices].astype(np.float32)
    else:
        rng = np.random.default_rng(0)
        probabilities = np.clip(labels + rng.normal(0, 0.35, labels.shape), 0, 1).astype(np.float32)
    times = []
    for _ in range(opts.repeat):
        challenge._CACHE.clear()  # time the computation, not the cache
        start = time.perf_counter()
        for p, t in zip(probabilities, labels):
            challenge_scores(p, t, THRESHOLDS)
            pixel_scores(p, t, THRESHOLDS)
        times.append(time.perf_counter() - start)
    shape = "x".join(map(str, labels.shape[1:]))
    print(f"{len(labels)} slices of {shape}, {len(THRESHOLDS)} thresholds: "
          f"best {min(times):.2f} s, median {np.median(times):.2f} s over {opts.repeat} runs "
          f"({min(times) / len(labels) / len(THRESHOLDS) * 1000:.0f} ms per slice and threshold)")


if __name__ == "__main__":
    main()
