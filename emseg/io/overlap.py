"""Reading and writing beside the computation: while a slice is predicted, the next ones are read and the earlier
ones written, each on its own thread (file I/O and torch release the GIL), so a fast device does not wait on TIFF or
zarr I/O. Order is kept; the first error of a reader or writer is raised in the caller, in order; memory holds at
most ``depth`` slices ahead and ``depth`` behind."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_DONE = object()


def read_ahead(items: Iterable, depth: int = 2) -> Iterator:
    """``items`` in order, produced by a thread that runs up to ``depth`` items ahead of the consumer. An error
    while producing item N is raised after items 0..N-1 were yielded; closing the iterator stops the thread."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ahead.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put((_DONE, None))
        except BaseException as error:  # handed to the consumer, raised there
            ahead.put((_DONE, error))

    thread = threading.Thread(target=produce, name="emseg-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ahead.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it end
            try:
                ahead.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)


class WriteBehind:
    """``with WriteBehind() as behind: behind.submit(write, result)``: calls run in order on one thread, at most
    ``depth`` waiting; the first failed call's error is raised by the next ``submit`` or on leaving the block, which
    waits for every call (after an error in the block, calls not started are dropped)."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emseg-write-behind")
        self._pending: deque[Future] = deque()

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.depth):
            self._pending.popleft().result()  # raises the write's error here, in order
        self._pending.append(self._pool.submit(call, *args))

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                for future in self._pending:
                    future.cancel()
            while self._pending:
                future = self._pending.popleft()
                if exc_type is None:
                    future.result()
                elif not future.cancelled():
                    future.exception()  # wait for it; the block's own error is the one to report
        finally:
            self._pool.shutdown(wait=True)
