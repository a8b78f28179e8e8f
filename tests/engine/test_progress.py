"""emseg.engine.progress: a bar with rate and time left on a terminal, one log line where output goes to a file."""

from __future__ import annotations

import logging

import pytest
from ignite.engine import Engine

from emseg.engine import progress as progress_module
from emseg.engine.progress import ProgressBar, progress


def _engine() -> Engine:
    return Engine(lambda engine, batch: {"loss": float(batch)})


@pytest.mark.parametrize("terminal", [False, True])
def test_engine_progress(monkeypatch, capsys, caplog, terminal):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: terminal)
    engine = _engine()
    ProgressBar("training", output_transform=lambda output: output["loss"]).attach(engine)
    with caplog.at_level(logging.INFO, logger="emseg.engine.progress"):
        engine.run(range(5), max_epochs=2)
    assert "training: 2 epochs of 5 iterations" in caplog.text  # also on a terminal: where the bar starts
    bar = capsys.readouterr().err
    if terminal:
        assert all(part in bar for part in ("training [2/2]", "4/5", "loss=3", "it/s"))
    else:
        assert bar == ""  # no carriage-return noise in log files


@pytest.mark.parametrize("terminal", [False, True])
def test_iterable_progress(monkeypatch, capsys, terminal):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: terminal)
    assert list(progress(iter(range(3)), "inference", total=3)) == [0, 1, 2]
    bar = capsys.readouterr().err
    assert ("3/3" in bar and "slice/s" in bar) if terminal else bar == ""
