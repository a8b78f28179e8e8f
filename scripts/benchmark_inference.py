"""Print slices per second and peak memory of whole-stack inference with a bundle's inference config.

    python scripts/benchmark_inference.py --bundle unet --slices 2 200 --tta none all

For each stack length and TTA setting, a fresh process runs ``emseg.inference.segment_stack``
(the bundle's inference.json: sliding window, bfloat16 on CPU) on a TIFF stack of 512x512 ISBI
test slices repeated to that length, and reports the time of the segmentation itself (model
loading excluded) and its own peak resident memory (ru_maxrss). Weights are the bundle's models/model.pt when
present, else the freshly initialised network (speed and memory do not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
TTA = {"none": [[0, False]], "all": "all"}


def measure(bundle: str, input_path: str, output_path: str, tta: str) -> None:
    """Child process: run the bundle's inference once."""
    import torch

    from emseg.engine.paths import load_config
    from emseg.engine.tta import ALL_TRANSFORMS
    from emseg.inference import segment_stack
    from emseg.networks import load_weights

    transforms = [list(t) for t in ALL_TRANSFORMS] if tta == "all" else TTA[tta]
    parser = load_config(REPO_ROOT / "bundles" / bundle / "configs" / "inference.json",
                          {"tta_transforms": transforms, "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network")
    weights = REPO_ROOT / "bundles" / bundle / "models" / "model.pt"
    network = load_weights(network, weights) if weights.is_file() else network.eval()
    start = time.perf_counter()
    segment_stack(network, parser.get_parsed_content("inferer"), input_path, output_path,
                  transform=parser.get_parsed_content("preprocessing"),
                  postprocessing=parser.get_parsed_content("postprocessing"), device=torch.device("cpu"))
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--bundle", default="unet")
    args.add_argument("--slices", type=int, nargs="+", default=[2, 200])
    args.add_argument("--tta", nargs="+", default=["none", "all"], choices=sorted(TTA))
    args.add_argument("--child", nargs=3, metavar=("INPUT", "OUTPUT", "TTA"), help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.child:
        measure(opts.bundle, *opts.child)
        return
    source = tifffile.imread(SHARED / "isbi2012" / "test-volume.tif")
    print(f"bundle {opts.bundle}, 512x512 slices, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for count in opts.slices:
            stack = Path(tmp) / f"stack{count}.tif"
            tifffile.imwrite(stack, np.resize(source, (count, *source.shape[1:])), imagej=True)
            for tta in opts.tta:
                child = subprocess.run([sys.executable, __file__, "--bundle", opts.bundle, "--child", str(stack),
                                        str(Path(tmp) / f"out{count}-{tta}.tif"), tta], check=True, capture_output=True, text=True)
                result = json.loads(child.stdout.strip().splitlines()[-1])
                print(json.dumps({"slices": count, "tta": tta, "seconds": round(result["seconds"], 1),
                                  "slices_per_second": round(count / result["seconds"], 3),
                                  "peak_rss_mib": round(result["peak_rss_mib"], 1)}), flush=True)


if __name__ == "__main__":
    main()
