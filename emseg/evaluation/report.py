"""The evaluation report as an Ignite handler: score every evaluated slice, write and log the results."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from ignite.engine import Engine, Events

from emseg.evaluation.scores import score_stack

logger = logging.getLogger(__name__)


class EvaluationReport:
    """Collect one (probabilities, label) pair per evaluated slice and score the stack at the end of the run.

    Writes ``metrics.csv``/``summary.json`` to ``output_dir`` (:func:`emseg.evaluation.score_stack`), prints a
    table, and puts the summary's numbers into ``engine.state.metrics`` (prefixed by ``prefix``), so an MLflow
    tracker attached after this handler logs them. Reads per-class probabilities from ``prob_key`` and the
    one-hot label from ``label_key`` of the evaluator's output.

    Args:
        output_dir: where the report goes.
        class_names: names of the label values 0, 1, ...
        interior_class: the cell-interior class of a membrane task (adds the ISBI challenge scores), or None.
    """

    def __init__(self, output_dir: str, class_names: Sequence[str], interior_class: int | None = None,
                 prob_key: str = "prob", label_key: str = "label", name_key: str = "name", prefix: str = "") -> None:
        self.output_dir = output_dir
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
            label = output[self.label_key].detach().argmax(0).cpu().numpy()
            self._items.append((str(item.get(self.name_key, len(self._items))), prob, label))

    def _report(self, engine: Engine) -> None:
        names, probabilities, labels = zip(*self._items)
        scores = score_stack(probabilities, labels, self.class_names, self.interior_class, names)
        csv_path, json_path = scores.write(self.output_dir)
        logger.info("evaluation of %d slices:\n%s\nwrote %s and %s", len(names), scores.table(), csv_path, json_path)
        for key, value in scores.summary.items():
            if isinstance(value, float):
                engine.state.metrics[self.prefix + key] = value
