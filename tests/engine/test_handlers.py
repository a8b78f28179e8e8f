"""Validation schedule from a start epoch."""

from __future__ import annotations

from types import SimpleNamespace

from emseg.engine.handlers import ValidationFromEpoch


def due_epochs(interval, start, max_epochs):
    handler = ValidationFromEpoch.__new__(ValidationFromEpoch)  # schedule only, no evaluator needed
    handler.interval, handler.start_epoch = interval, start
    engine = SimpleNamespace(state=SimpleNamespace(max_epochs=max_epochs))
    return [epoch for epoch in range(1, max_epochs + 1) if handler._due(engine, epoch)]


def test_validation_starts_late_and_always_ends_at_the_last_epoch():
    assert due_epochs(4, 50, 100) == [50, 54, 58, 62, 66, 70, 74, 78, 82, 86, 90, 94, 98, 100]
    assert due_epochs(1, 1, 3) == [1, 2, 3]
    assert due_epochs(5, 1, 7) == [1, 6, 7]
