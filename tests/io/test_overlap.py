"""Reading ahead and writing behind (emseg.io.overlap): order kept, at most ``depth`` items ahead, errors raised in
order in the caller, threads gone when it stops."""

from __future__ import annotations

import threading
import time

import pytest

from emseg.io.overlap import WriteBehind, read_ahead


def test_read_ahead_keeps_order_and_runs_at_most_depth_ahead():
    produced = []

    def slices():
        for index in range(20):
            produced.append(index)
            yield index

    seen = []
    for item in read_ahead(slices(), depth=2):
        time.sleep(0.01)  # a slow consumer: the producer waits for it
        assert len(produced) - len(seen) <= 2 + 2  # the queue, one in the producer's hand, the one being consumed
        seen.append(item)
    assert seen == list(range(20))


def test_read_ahead_raises_a_reading_error_after_the_items_before_it():
    def slices():
        yield 0
        yield 1
        raise ValueError("slice 2 is damaged")

    seen = []
    with pytest.raises(ValueError, match="slice 2 is damaged"):
        for item in read_ahead(slices()):
            seen.append(item)
    assert seen == [0, 1]


def test_stopping_early_ends_the_reading_thread():
    items = read_ahead(iter(range(1000)), depth=2)
    assert next(items) == 0
    items.close()
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name == "emseg-read-ahead"]


def test_write_behind_writes_in_order_on_one_thread_and_waits_at_the_end():
    written, threads = [], set()

    def write(value):
        time.sleep(0.005)
        written.append(value)
        threads.add(threading.current_thread().name)

    with WriteBehind(depth=2) as behind:
        for value in range(10):
            behind.submit(write, value)
        assert len(written) >= 10 - 2 - 1  # at most depth waiting, one running
    assert written == list(range(10)) and len(threads) == 1 and threading.current_thread().name not in threads


def test_a_write_error_is_raised_in_the_caller_and_later_writes_are_dropped():
    written = []

    def write(value):
        if value == 3:
            raise OSError(28, "No space left on device")
        written.append(value)

    with pytest.raises(OSError, match="No space left"):
        with WriteBehind(depth=2) as behind:
            for value in range(20):
                behind.submit(write, value)
                time.sleep(0.005)
    assert written == [0, 1, 2]
