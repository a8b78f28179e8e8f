"""Print seconds per training step of a bundle's network for float32/bfloat16 x NCHW/channels-last.

    python scripts/benchmark_train_step.py --bundle bundles/unet --batch 8 --patch 256 --steps 5

Measures the network, loss and optimizer step the bundle's train.json builds (no data loading),
on the CPU or on CUDA when --device cuda. Prints one line per setting.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from monai.bundle import ConfigParser

from emseg.engine.precision import AutocastInferer, prepare_network


def step_time(parser: ConfigParser, device: str, amp: bool, channels_last: bool, batch: int, patch: int,
              steps: int) -> float:
    torch.manual_seed(0)
    network = prepare_network(parser.get_parsed_content("network_def", instantiate=True, lazy=False), device,
                              channels_last).train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    inferer = AutocastInferer(amp=amp, channels_last=channels_last)
    x = torch.randn(batch, 1, patch, patch, device=device)
    y = (torch.rand(batch, 1, patch, patch, device=device) > 0.5).float()
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(inferer(x, network), y).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--bundle", default="bundles/unet")
    args.add_argument("--device", default="cpu")
    args.add_argument("--batch", type=int, default=8)
    args.add_argument("--patch", type=int, default=256)
    args.add_argument("--steps", type=int, default=5)
    opts = args.parse_args()
    parser = ConfigParser()
    parser.read_config(os.path.join(opts.bundle, "configs", "train.json"))
    print(f"{opts.bundle}: batch {opts.batch} x {opts.patch}x{opts.patch}, {opts.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for amp in (False, True):
        for channels_last in (False, True):
            seconds = step_time(parser, opts.device, amp, channels_last, opts.batch, opts.patch, opts.steps)
            print(f"  amp={str(amp):5} channels_last={str(channels_last):5} {seconds:6.2f} s/step")


if __name__ == "__main__":
    main()
