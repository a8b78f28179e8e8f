"""Block-wise inference of zarr volumes larger than memory, on Dask distributed; resumable.

Each slice is cut into blocks of ``block`` pixels (a multiple of the output's chunks, so no two tasks write the same
chunk). A task reads its block with ``halo`` pixels of context on every side (mirrored beyond the volume's
edge), normalises it with its slice's mean and standard deviation (as the bundles' ``NormalizeIntensity`` does
with a whole slice; the statistics come from a first pass over the chunks), predicts it with the bundle's inferer
(test-time augmentation and precision as configured), crops the halo off and writes the block to its place in
the output, once. A ``done`` array beside the output records finished blocks, so a rerun after a crash computes
only the missing ones. The output (an OME-Zarr image, see :class:`~emseg.io.zarr_volumes.OmeZarrWriter`) is
written at ``<output>.part`` and renamed into place when every block is done. While a job runs, a second job on the
same output is refused (:class:`~emseg.io.safety.OutputLock`), so blocks are never written by two jobs at once.

The tasks run on a ``dask.distributed`` cluster: a ``LocalCluster`` of ``workers`` processes by default, or an
existing scheduler (``scheduler="tcp://host:8786"``, e.g. one started by dask-jobqueue on Slurm or PBS). Memory
per worker is bounded by the block size, not by the volume.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from emseg.engine.allocator import ENVIRONMENT
from emseg.io.safety import OutputError, OutputLock, check_not_an_input
from emseg.io.source import VolumeError
from emseg.io.zarr_volumes import create_image, finish_image, zarr_array
from emseg.networks import final_output

logger = logging.getLogger(__name__)

OUTPUTS = ("probability", "mask")


def block_grid(shape: Sequence[int], block: Sequence[int]) -> list[tuple[int, int, int]]:
    """(z, block row, block column) of every block of a (Z, Y, X) volume."""
    rows, columns = (math.ceil(size / step) for size, step in zip(shape[1:], block))
    return [(z, r, c) for z in range(shape[0]) for r in range(rows) for c in range(columns)]


def _input_array(path: str | Path, key: str | None):

    array, _ = zarr_array(Path(path), key)
    if array.ndim != 3:
        raise VolumeError(f"{path}: block-wise inference takes a (Z, Y, X) zarr volume, got shape {array.shape}")
    return array


def slice_statistics(path: str | Path, key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of every slice of a zarr volume, chunk by chunk."""
    import dask.array as da

    volume = da.from_zarr(_input_array(path, key)).astype(np.float64)
    mean, std = da.compute(volume.mean(axis=(1, 2)), volume.std(axis=(1, 2)))
    return mean, np.where(std > 0, std, 1.0)


def _region(array, z: int, y0: int, y1: int, x0: int, x1: int, halo: int) -> np.ndarray:
    """Rows y0-halo..y1+halo and columns x0-halo..x1+halo of slice z, mirrored beyond the volume's edge."""
    height, width = array.shape[1:]
    top, left = max(y0 - halo, 0), max(x0 - halo, 0)
    bottom, right = min(y1 + halo, height), min(x1 + halo, width)
    region = np.asarray(array[z, top:bottom, left:right], dtype=np.float32)
    pads = ((top - (y0 - halo), (y1 + halo) - bottom), (left - (x0 - halo), (x1 + halo) - right))
    if any(any(p) for p in pads):
        mode = "reflect" if all(p < s - 1 for (a, b), s in zip(pads, region.shape) for p in (a, b)) else "symmetric"
        region = np.pad(region, pads, mode=mode)
    return region


def predict_block(network: torch.nn.Module, inferer: Callable, array, z: int, rows: tuple[int, int],
                  columns: tuple[int, int], halo: int, mean: float, std: float,
                  postprocessing: Callable | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """The postprocessed network output (C, rows, columns) of one block of slice ``z``, predicted with ``halo``
    pixels of context and cropped back."""
    (y0, y1), (x0, x1) = rows, columns
    region = (_region(array, z, y0, y1, x0, x1, halo) - np.float32(mean)) / np.float32(std)
    with torch.inference_mode():
        logits = final_output(inferer(torch.from_numpy(region)[None, None].to(device), network))
        output = postprocessing(logits[0]) if postprocessing is not None else logits[0]
    output = output.detach().float().cpu().numpy()
    return output[:, halo:halo + y1 - y0, halo:halo + x1 - x0]


def local_workers(device: str | torch.device, workers: int | None) -> int:
    """Workers of the local cluster: as asked, else one per GPU for a CUDA device, one on a CPU."""
    if workers is not None:
        return int(workers)
    return max(1, torch.cuda.device_count()) if torch.device(device).type == "cuda" else 1


def worker_device(device: str | torch.device, worker: object, gpus: int) -> torch.device:
    """The device a task on ``worker`` uses: ``cuda`` without an index on the local cluster's worker ``i`` (an
    integer name) is GPU ``i`` modulo the ``gpus`` it sees, so one worker per GPU uses every GPU; anything else
    (a CPU, an indexed GPU, a worker started with its own CUDA_VISIBLE_DEVICES) as given."""
    device = torch.device(device)
    if device.type != "cuda" or device.index is not None or not isinstance(worker, int) or gpus < 1:
        return device
    return torch.device("cuda", worker % gpus)


def _run_block(network, inferer, postprocessing, device, threads, input_path, input_key, store, index, block,
               halo, mean, std, output, channel) -> tuple[int, int, int]:
    """One task: predict block ``index`` and write it, then mark it done."""
    import zarr
    from distributed import get_worker

    if threads:
        torch.set_num_threads(threads)
    try:
        device = worker_device(device, get_worker().name, torch.cuda.device_count())
    except ValueError:  # not on a Dask worker
        pass
    array = _input_array(input_path, input_key)
    z, r, c = index
    rows = (r * block[0], min((r + 1) * block[0], array.shape[1]))
    columns = (c * block[1], min((c + 1) * block[1], array.shape[2]))
    result = predict_block(network, inferer, array, z, rows, columns, halo, mean[z], std[z], postprocessing, device)
    group = zarr.open_group(str(store), mode="r+")
    if output == "mask":
        group["s0"][z, rows[0]:rows[1], columns[0]:columns[1]] = result.argmax(0).astype(np.uint8)
    else:
        group["s0"][z, rows[0]:rows[1], columns[0]:columns[1]] = result[channel]
    group["done"][z, r, c] = 1
    return index


def _peak_memory_mib() -> float:
    """Peak resident memory of this process (a Dask worker), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare_store(partial: Path, shape, block, dtype, grid_shape) -> None:
    import zarr

    if partial.exists():
        try:
            group = zarr.open_group(str(partial), mode="r")
            ours = group["done"].shape == grid_shape and group["s0"].shape == tuple(shape) \
                and group["s0"].dtype == np.dtype(dtype)
        except Exception:
            ours = False
        if ours:
            return  # an interrupted run of the same job: resume it
        raise OutputError(f"{partial}: exists and is not this job's unfinished output; move it away")
    group = zarr.open_group(str(partial), mode="w")
    create_image(group, shape, (1, *block), dtype, fill_value=0)
    group.create_array("done", shape=grid_shape, chunks=(1, 1, 1), dtype="uint8", fill_value=0)


def _finish(partial: Path, output: Path, spacing: Sequence[float]) -> None:
    import zarr


    group = zarr.open_group(str(partial), mode="r+")
    del group["done"]
    finish_image(group, spacing, output.stem)
    partial.rename(output)


def segment_blockwise(network: torch.nn.Module, inferer: Callable, input_path: str | Path, output_path: str | Path,
                      input_key: str | None = None, output: str = "probability", channel: int = 1,
                      block: Sequence[int] = (1024, 1024), halo: int = 96, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                      postprocessing: Callable | None = None, device: str | torch.device = "cpu",
                      scheduler: str | None = None, workers: int | None = None,
                      threads_per_worker: int | None = None) -> dict:
    """Segment a zarr volume block by block on Dask (see the module docstring); returns the counts of blocks in
    the volume, computed now and found done by an earlier run, the seconds the blocks took and the peak resident
    memory of each worker (MiB).

    Args:
        output: ``probability`` (float32 map of ``channel``) or ``mask`` (uint8 argmax).
        block: (rows, columns) of a block; the output is chunked by it.
        halo: pixels of context read around a block (the network's receptive field, so no seam shows).
        scheduler: address of an existing Dask scheduler; None starts a ``LocalCluster`` of ``workers`` processes,
            each running one block at a time (None: one per GPU on a CUDA ``device``, each on its own GPU; one on a
            CPU).
        threads_per_worker: torch's threads in each task; None: the CPUs shared out over the local workers (on an
            existing scheduler, the workers' own setting).
    """
    if output not in OUTPUTS:
        raise ValueError(f"block-wise output must be one of {OUTPUTS}, got {output!r}"
                         + ("; make instances from its probability output with `emseg segment`"
                            if output == "instances" else ""))
    output_path, input_path = Path(output_path), Path(input_path)
    if output_path.suffix != ".zarr":
        raise OutputError(f"{output_path}: block-wise output is an OME-Zarr image, a folder named *.zarr")
    check_not_an_input(output_path, [input_path])
    with OutputLock(output_path):  # a second job on this output is refused: blocks are never written twice at once
        return _segment_blockwise(network, inferer, input_path, output_path, input_key, output, channel, block, halo,
                                  spacing, postprocessing, device, scheduler, workers, threads_per_worker)


def _segment_blockwise(network, inferer, input_path: Path, output_path: Path, input_key, output, channel, block,
                       halo, spacing, postprocessing, device, scheduler, workers, threads_per_worker) -> dict:
    from dask.distributed import Client, LocalCluster, as_completed

    if output_path.exists() or output_path.is_symlink():
        raise OutputError(f"{output_path}: exists; choose another output (block-wise output is never replaced)")
    array = _input_array(input_path, input_key)
    block = tuple(int(b) for b in block)
    grid = block_grid(array.shape, block)
    grid_shape = (array.shape[0], *(math.ceil(s / b) for s, b in zip(array.shape[1:], block)))
    partial = output_path.with_name(output_path.name + ".part")
    _prepare_store(partial, array.shape, block, "uint8" if output == "mask" else "float32", grid_shape)

    import zarr

    done = zarr.open_group(str(partial), mode="r")["done"][:]
    todo = [index for index in grid if not done[index]]
    summary = {"blocks": len(grid), "computed": len(todo), "skipped": len(grid) - len(todo)}
    workers = local_workers(device, workers)
    if threads_per_worker is None and not scheduler:
        threads_per_worker = max(1, (os.cpu_count() or 1) // workers)
    cluster = None
    if not scheduler:  # one task at a time per worker (torch's own threads use the worker's cores), and the
        # allocator setting of emseg.engine.allocator: without it a block's activations are faulted in page by page
        import dask

        environment = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **ENVIRONMENT}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environment}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(scheduler or cluster)
    try:
        if client.dashboard_link:
            logger.info("Dask dashboard: %s", client.dashboard_link)
        mean, std = slice_statistics(input_path, input_key)
        shared = client.scatter([network, inferer, postprocessing, mean, std], broadcast=True)
        futures = [client.submit(_run_block, *shared[:3], device, threads_per_worker, str(input_path), input_key,
                                 str(partial), index, block, halo, shared[3], shared[4], output, channel, pure=False)
                   for index in todo]
        start = time.perf_counter()
        for finished, future in enumerate(as_completed(futures), start=1):
            future.result()  # a failed block raises here, after the blocks before it were recorded
            rate = finished / (time.perf_counter() - start)
            logger.info("block %d/%d done (%.2f blocks/s, %.0f s left)", finished + summary["skipped"], len(grid),
                        rate, (len(todo) - finished) / rate)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        summary["worker_peak_mib"] = sorted(round(m, 1) for m in client.run(_peak_memory_mib).values())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    _finish(partial, output_path, spacing)
    logger.info("wrote %s (%d blocks: %d computed in %.1f s, %d done before; peak memory per worker %s MiB)",
                output_path, len(grid), summary["computed"], summary["seconds"], summary["skipped"],
                summary["worker_peak_mib"])
    return summary

