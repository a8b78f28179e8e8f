"""The evaluation report as an Ignite handler: score every evaluated slice, write and log the results."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events

from emseg.data.painted import UNLABELLED
from emseg.evaluation.scores import score_stack
from emseg.io.files import write_text_atomically

logger = logging.getLogger(__name__)


class EvaluationReport:
    """Collect one (probabilities, label) pair per evaluated slice and score the stack at the end of the run.

    Writes ``metrics.csv``/``summary.json`` to ``output_dir`` (:func:`emseg.evaluation.score_stack`), prints a
    table, and puts the summary's scores into ``engine.state.metrics`` (prefixed by ``prefix``, e.g. ``test_``), so
    an MLflow tracker attached after this handler logs them; the thresholds the challenge scores were taken at go
    to ``engine.state.run_params`` (``<prefix>v_rand_threshold``, ...), which the tracker logs as params. Reads per-class probabilities from ``prob_key`` and the
    one-hot label from ``label_key`` of the evaluator's output.

    With ``record``, also writes ``evaluation.json``: the record (data set, split, ...), the weights scored (the
    file, the sha256 of its bytes and the run they came from, as :class:`emseg.engine.handlers.LoadWeights` puts
    them in ``engine.state.weights``) and the summary's numbers, so a packed model can carry its own scores.

    Args:
        output_dir: where the report goes.
        class_names: names of the label values 0, 1, ...
        interior_class: the cell-interior class of a membrane task (adds the ISBI challenge scores), or None.
        record: what to write into ``evaluation.json`` besides the scores and weights; None: no such file.
    """

    def __init__(self, output_dir: str, class_names: Sequence[str], interior_class: int | None = None,
                 prob_key: str = "prob", label_key: str = "label", name_key: str = "name", prefix: str = "",
                 record: Mapping | None = None) -> None:
        self.output_dir = output_dir
        self.record = record
        self.class_names, self.interior_class = list(class_names), interior_class
        self.prob_key, self.label_key, self.name_key, self.prefix = prob_key, label_key, name_key, prefix
        self._items: list[tuple[str, np.ndarray, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._items.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for item, output in zip(batch, engine.state.output):
            prob = output[self.prob_key].detach().float().cpu().numpy()
            onehot = output[self.label_key].detach()
            label = onehot.argmax(0).cpu().numpy().astype(np.int16)
            label[(onehot.sum(0) == 0).cpu().numpy()] = UNLABELLED  # not painted: in no score
            self._items.append((str(item.get(self.name_key, len(self._items))), prob, label))

    def _report(self, engine: Engine) -> None:
        names, probabilities, labels = zip(*self._items)
        scores = score_stack(probabilities, labels, self.class_names, self.interior_class, names)
        csv_path, json_path = scores.write(self.output_dir)
        logger.info("evaluation of %d slices:\n%s\nwrote %s and %s", len(names), scores.table(), csv_path, json_path)
        numbers = {key: value for key, value in scores.summary.items()
                   if isinstance(value, float) and not key.endswith("_threshold")}
        thresholds = {key: value for key, value in scores.summary.items()
                      if isinstance(value, float) and key.endswith("_threshold")}  # not the per-threshold curves
        for key, value in numbers.items():
            engine.state.metrics[self.prefix + key] = value
        engine.state.run_params = {self.prefix + key: value for key, value in thresholds.items()}
        if self.record is not None:
            record = {**self.record, "weights": getattr(engine.state, "weights", None), "slices": list(names),
                      "scorer": scores.summary.get("scorer"), "scores": numbers, "thresholds": thresholds}
            write_text_atomically(Path(self.output_dir) / "evaluation.json", json.dumps(record, indent=2, default=str))
