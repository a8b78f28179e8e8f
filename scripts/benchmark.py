"""Speed of a bundle beside a plain PyTorch loop, measured in one run on the machine at hand.

    python scripts/benchmark.py                  # bundles/unet's recipe: batches of 8 patches of 256x256
    python scripts/benchmark.py --device cuda
    python scripts/benchmark.py --quick          # a few steps at small sizes: every figure, not a measurement

Prints, in this order:
  (a) the peer: a plain float32 PyTorch loop as the reference projects train (MONAI BasicUNet with the bundle's
      widths, numpy flips and rotations, binary cross-entropy, Adam), patches/s; measured again after (b), with
      the allocator setting the bundle makes (emseg.engine.allocator), to show what that setting alone gives;
  (b) the bundle's training end to end (its own engine, data pipeline, handlers), patches/s;
  (c) the bundle's network + loss + optimizer alone (its precision and layout), patches/s;
  (d) the share of an end-to-end step spent outside (c);
  (e) inference slices/s without and with test-time augmentation, for 512x512 and 2048x2048 slices;
  (f) peak memory after each part (process RSS; on CUDA also the peak allocated on the GPU);
  (g) achieved GFLOP/s of (c) and its ratio to a matmul measured in this run in the same precision;
  (h) the supply rate: (b) with a network that does nothing (one learnable number as its output), the patches/s
      the data path and engine can deliver on this machine, beside (c): the smaller of the two bounds (b); for
      either feed (the bundle key feed: "loader", MONAI's DataLoader, and "device", batches cut and augmented on
      the device), then (b) again with the feed the bundle does not choose here;
  (i) (c) at larger batches, and the smallest batch within 5% of the fastest with the learning rate scaled for it;
  (j) (c) with the network compiled by torch.compile (on CUDA with CUDA graphs, mode reduce-overhead), and the
      seconds its first step takes (compiling);
and the ratios of (b) and (c) to the peer. The last line is all figures as JSON (``--json FILE`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> dict:
    peak = {"rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        peak["cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def matmul_gflops(device: str, dtype: torch.dtype, size: int, repeats: int) -> float:
    """GFLOP/s of a (size x size) @ (size x size) matmul in ``dtype``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def timed_steps(step, steps: int, device: str) -> float:
    """Seconds per call of ``step`` over ``steps`` calls, after one call to warm up."""
    step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def peer_loop(volume: np.ndarray, labels: np.ndarray, features, batch: int, patch: int, steps: int,
              device: str) -> float:
    """(a) patches/s of a plain float32 loop: random crops, numpy flips/rotations, BasicUNet, BCE, Adam."""
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=features).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    image = (volume - volume.mean()) / volume.std()

    def batch_of_patches():
        xs, ys = [], []
        for _ in range(batch):
            z = rng.integers(len(image))
            y0, x0 = rng.integers(image.shape[1] - patch + 1), rng.integers(image.shape[2] - patch + 1)
            x, y = image[z, y0:y0 + patch, x0:x0 + patch], labels[z, y0:y0 + patch, x0:x0 + patch]
            k, flip = rng.integers(4), rng.integers(2)
            x, y = np.rot90(x, k), np.rot90(y, k)
            if flip:
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return (torch.from_numpy(np.stack(xs)[:, None]).float().to(device),
                torch.from_numpy(np.stack(ys)[:, None]).float().to(device))

    def step():
        x, y = batch_of_patches()
        optimizer.zero_grad()
        loss_fn(network(x), y).backward()
        optimizer.step()

    return batch / timed_steps(step, steps, device)


def bundle_config(bundle: Path, name: str, overrides: dict):
    from emseg.engine.paths import load_config

    return load_config(bundle / "configs" / name, overrides)


class DoNothing(torch.nn.Module):
    """A network that computes nothing: its output is one learnable number spread over the logits' shape, so the
    loss, backward pass and optimizer step cost next to nothing and a training step is the data path and engine."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.value = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], self.out_channels, *x.shape[2:])


def bundle_end_to_end(bundle: Path, overrides: dict, steps: int, tmp: Path, do_nothing: bool = False) -> float:
    """(b) patches/s of the bundle's own trainer over ``steps`` iterations after one, validation off; (h) the same
    with :class:`DoNothing` as its network (``do_nothing``)."""
    from ignite.engine import Events

    run = {**overrides, "epochs": 2, "epoch_length": steps + 1, "val_start_epoch": 2, "run_name": "benchmark",
           "output_dir": str(tmp / "run"), "ckpt_dir": str(tmp / "models"),
           "tracking_uri": f"sqlite:///{tmp / 'mlruns.db'}"}
    parser = bundle_config(bundle, "train.json", run)
    if do_nothing:
        parser["network"] = DoNothing(parser.get_parsed_content("num_classes")).to(parser.get_parsed_content("device"))
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.terminate())
    trainer.run()
    return parser.get_parsed_content("batch_size") * steps / (stamps[-1] - stamps[0])


def network_alone(bundle: Path, overrides: dict, steps: int, device: str, compile_mode: str | None = None
                  ) -> tuple[float, float]:
    """(c) patches/s of the bundle's network + loss + optimizer on one batch, and FLOPs per patch (fwd + bwd);
    (j) the same with the network compiled by ``torch.compile`` in ``compile_mode`` (the seconds its first step took,
    compiling, in place of the FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    parser = bundle_config(bundle, "train.json", overrides)
    batch, patch = parser.get_parsed_content("batch_size"), parser.get_parsed_content("patch_size")
    network = parser.get_parsed_content("network").train()
    if compile_mode is not None:
        network.compile(mode=compile_mode)
    loss_fn, inferer = parser.get_parsed_content("loss"), parser.get_parsed_content("train#inferer")
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    x = torch.randn(batch, 1, *patch, device=device)
    y = torch.randint(0, parser.get_parsed_content("num_classes"), (batch, 1, *patch), device=device).float()

    def step():
        optimizer.zero_grad()
        loss_fn(inferer(x, network), y).backward()
        optimizer.step()

    if compile_mode is not None:
        start = time.perf_counter()
        step()
        synchronize(device)
        first = time.perf_counter() - start
        return batch / timed_steps(step, steps, device), first
    seconds = timed_steps(step, steps, device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(network(x), y).backward()
    return batch / seconds, counter.get_total_flops() / batch


def inference_rate(bundle: Path, overrides: dict, image: np.ndarray, tta: bool, slices: int, device: str) -> float:
    """(e) slices/s of the bundle's inference (its windows, precision and layout) on ``image``, repeated."""
    from emseg.inference import predict_slices

    parser = bundle_config(bundle, "inference.json", {
        **overrides, "tta_transforms": "all" if tta else [[0, False]],
        "network": "$emseg.engine.precision.prepare_network(@network_def, @device)"})  # random weights: speed only
    run = predict_slices([image] * (slices + 1), parser.get_parsed_content("network"),
                         parser.get_parsed_content("inferer"), parser.get_parsed_content("preprocessing"),
                         parser.get_parsed_content("postprocessing"), device)
    next(run)  # warm-up slice
    synchronize(device)
    start = time.perf_counter()
    for _ in run:
        pass
    synchronize(device)
    return slices / (time.perf_counter() - start)


def main(argv=None) -> dict:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--bundle", default=str(REPO_ROOT / "bundles" / "unet"))
    args.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    args.add_argument("--slices", type=int, default=4, help="timed inference slices per measurement")
    args.add_argument("--quick", action="store_true", help="tiny sizes and step counts: check the figures print")
    args.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args.add_argument("--no-compile", action="store_true", help="skip (j), torch.compile (minutes on a CPU)")
    args.add_argument("--batch-sizes", default=None,
                      help="(i): batch sizes to time the network at, e.g. 8,16,32 (default 8,16,32,64 on a GPU, "
                           "8,16 on the CPU)")
    opts = args.parse_args(argv)
    logging.basicConfig(format="    %(name)s: %(message)s", level=logging.WARNING, stream=sys.stdout)
    for name in ("emseg.engine.precision", "emseg.engine.allocator", "emseg.data.workers"):  # the choices made
        logging.getLogger(name).setLevel(logging.INFO)
    import tifffile

    from emseg.engine.feed import resolve_feed

    bundle, device = Path(opts.bundle).resolve(), opts.device
    overrides = {"dataset_dir": str(SHARED / "isbi2012"), "download": False, "device": f"$torch.device('{device}')"}
    sizes, matmul, steps, slices = (512, 2048), 2048, opts.steps, opts.slices
    if opts.quick:
        overrides.update(patch_size=[64, 64], batch_size=2, crops_per_slice=2, features=[4, 4, 8, 8, 16, 4])
        sizes, matmul, steps, slices = (128, 256), 256, 2, 1
    train = bundle_config(bundle, "train.json", overrides)
    patch, batch = train.get_parsed_content("patch_size"), train.get_parsed_content("batch_size")
    features = train["features"] if isinstance(train.get("features"), list) else [32, 32, 64, 128, 256, 32]
    amp = train.get_parsed_content("amp")
    reduced = torch.float16 if device == "cuda" else torch.bfloat16
    reduced_name = str(reduced).split(".")[1]
    volume = tifffile.imread(SHARED / "isbi2012" / "train-volume.tif").astype(np.float32)
    labels = (tifffile.imread(SHARED / "isbi2012" / "train-labels.tif") > 0).astype(np.float32)
    figures: dict = {"bundle": bundle.name, "device": device, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "batch": batch, "patch": list(patch), "amp": amp,
                     "channels_last": train.get_parsed_content("channels_last"), "memory": {}}
    print(f"{bundle.name} on {device} ({torch.get_num_threads()} threads, torch {torch.__version__}): batches of "
          f"{batch} patches of {patch[0]}x{patch[1]}, amp {amp}, channels-last {figures['channels_last']}", flush=True)

    figures["matmul_gflops_float32"] = matmul_gflops(device, torch.float32, matmul, 3 if opts.quick else 10)
    figures[f"matmul_gflops_{reduced_name}"] = matmul_gflops(device, reduced, matmul, 3 if opts.quick else 10)
    print(f"matmul {matmul}x{matmul}: float32 {figures['matmul_gflops_float32']:.0f} GFLOP/s, "
          f"{reduced_name} {figures[f'matmul_gflops_{reduced_name}']:.0f} GFLOP/s")
    figures["a_peer_patches_per_s"] = peer_loop(volume, labels, features, batch, patch[0], steps, device)
    figures["memory"]["a"] = peak_memory_mib(device)
    print(f"(a) peer, plain float32 loop: {figures['a_peer_patches_per_s']:.2f} patches/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        figures["b_bundle_patches_per_s"] = bundle_end_to_end(bundle, overrides, steps, Path(tmp))
    figures["memory"]["b"] = peak_memory_mib(device)
    print(f"(b) bundle training end to end: {figures['b_bundle_patches_per_s']:.2f} patches/s "
          f"({figures['b_bundle_patches_per_s'] / figures['a_peer_patches_per_s']:.2f}x the peer)", flush=True)
    figures["a_peer_allocator_patches_per_s"] = peer_loop(volume, labels, features, batch, patch[0], steps, device)
    print(f"(a) the same peer loop again, with the allocator setting (b) made: "
          f"{figures['a_peer_allocator_patches_per_s']:.2f} patches/s", flush=True)
    figures["c_network_patches_per_s"], flops = network_alone(bundle, overrides, steps, device)
    figures["memory"]["c"] = peak_memory_mib(device)
    print(f"(c) network + loss + optimizer alone: {figures['c_network_patches_per_s']:.2f} patches/s "
          f"({figures['c_network_patches_per_s'] / figures['a_peer_patches_per_s']:.2f}x the peer)", flush=True)
    figures["d_outside_share"] = 1 - figures["b_bundle_patches_per_s"] / figures["c_network_patches_per_s"]
    print(f"(d) share of an end-to-end step outside (c): {100 * figures['d_outside_share']:.0f}%")
    inference = bundle_config(bundle, "inference.json", {}).config  # overrides that apply to inference
    for size in sizes:
        image = np.resize(volume[0], (size, size)) if size > volume.shape[1] else volume[0, :size, :size]
        for tta in (False, True):
            key = f"e_inference_{size}_{'tta' if tta else 'no_tta'}_slices_per_s"
            figures[key] = inference_rate(bundle, {k: v for k, v in overrides.items() if k in inference}, image, tta,
                                          slices, device)
            print(f"(e) inference {size}x{size} {'with 8-fold TTA' if tta else 'without TTA'}: {figures[key]:.3f} "
                  f"slices/s ({1 / figures[key]:.2f} s per slice)", flush=True)
    figures["memory"]["e"] = peak_memory_mib(device)
    print(f"(f) peak memory after (a) {figures['memory']['a']}, (b) {figures['memory']['b']}, "
          f"(c) {figures['memory']['c']}, (e) {figures['memory']['e']} MiB")
    figures["g_flops_per_patch"] = flops
    figures["g_achieved_gflops"] = flops * figures["c_network_patches_per_s"] / 1e9
    reference = figures[f"matmul_gflops_{reduced_name}"] if amp else figures["matmul_gflops_float32"]
    figures["g_ratio_to_matmul"] = figures["g_achieved_gflops"] / reference
    print(f"(g) {flops / 1e9:.3g} GFLOP per patch (forward + backward): {figures['g_achieved_gflops']:.0f} GFLOP/s "
          f"achieved, {100 * figures['g_ratio_to_matmul']:.0f}% of the matmul rate in the same precision")
    chosen = resolve_feed(train.get("feed", "auto"), device)
    for feed in ("loader", "device"):
        with tempfile.TemporaryDirectory() as tmp:
            figures[f"h_supply_{feed}_patches_per_s"] = bundle_end_to_end(bundle, {**overrides, "feed": feed},
                                                                          steps * 3, Path(tmp), True)
        mark = " (the bundle's choice here)" if feed == chosen else ""
        print(f"(h) supply, feed {feed}{mark}: data path and engine "
              f"with a network that does nothing: {figures[f'h_supply_{feed}_patches_per_s']:.1f} patches/s, "
              f"{figures[f'h_supply_{feed}_patches_per_s'] / figures['c_network_patches_per_s']:.1f}x the network's "
              "rate (c)", flush=True)
    figures["h_feed"] = chosen
    figures["h_supply_patches_per_s"] = figures[f"h_supply_{chosen}_patches_per_s"]
    figures["h_supply_to_network"] = figures["h_supply_patches_per_s"] / figures["c_network_patches_per_s"]
    bound = "the network" if figures["h_supply_to_network"] >= 1 else "the data path and engine"
    print(f"(h) with the bundle's feed ({chosen}) training here is bound by {bound}")
    other = "device" if chosen == "loader" else "loader"
    with tempfile.TemporaryDirectory() as tmp:
        figures[f"b_bundle_feed_{other}_patches_per_s"] = bundle_end_to_end(bundle, {**overrides, "feed": other},
                                                                           steps, Path(tmp))
    print(f"(b) bundle training end to end with feed {other} instead: "
          f"{figures[f'b_bundle_feed_{other}_patches_per_s']:.2f} patches/s", flush=True)
    sizes_i = [int(b) for b in opts.batch_sizes.split(",")] if opts.batch_sizes else (
        [batch, 2 * batch] if opts.quick or device == "cpu" else [batch, 2 * batch, 4 * batch, 8 * batch])
    figures["i_network_patches_per_s_by_batch"] = {}
    for size in sizes_i:
        figures["i_network_patches_per_s_by_batch"][str(size)] = network_alone(
            bundle, {**overrides, "batch_size": size}, steps, device)[0]
    rates = figures["i_network_patches_per_s_by_batch"]
    best = max(rates.values())
    enough = min(int(b) for b, r in rates.items() if r >= 0.95 * best)
    learning_rate = train.get_parsed_content("learning_rate")
    figures["i_batch_size"], figures["i_learning_rate"] = enough, learning_rate * (enough / batch) ** 0.5
    print("(i) network + loss + optimizer by batch size: " + ", ".join(f"{b}: {r:.1f}" for b, r in rates.items())
          + f" patches/s; the smallest within 5% of the fastest is {enough} (train with --batch_size {enough} "
          f"--learning_rate {figures['i_learning_rate']:.3g}: the recipe's {learning_rate:g} scaled by the square "
          f"root of the batch, as for Adam)", flush=True)
    if not opts.no_compile:
        mode = "reduce-overhead" if device == "cuda" else "default"  # on CUDA: CUDA graphs as well
        try:
            rate, first = network_alone(bundle, overrides, steps, device, compile_mode=mode)
            figures["j_compiled_patches_per_s"], figures["j_compile_seconds"] = rate, first
            print(f"(j) network + loss + optimizer with torch.compile (mode {mode}): {rate:.2f} patches/s, "
                  f"{rate / figures['c_network_patches_per_s']:.2f}x (c); its first step, compiling, took "
                  f"{first:.0f} s", flush=True)
        except Exception as error:  # a missing compiler, an unsupported layer: say so, keep the other figures
            figures["j_compile_error"] = f"{type(error).__name__}: {error}"[:300]
            print(f"(j) torch.compile failed here: {figures['j_compile_error']}", flush=True)
    line = json.dumps(figures)
    if opts.json:
        Path(opts.json).write_text(line + "\n")
    print(line)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
