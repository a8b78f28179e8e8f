"""Training on while the MLflow server is away: one MLflow client per tracking store in a process, which falls back
to a store inside the run folder when the server cannot be reached, so a training never hangs on it or dies of it.

    bundles/<name>/runs/<run_name>/mlflow-offline/
      mlflow.db         a SQLite MLflow store holding what the run logged while the server was away
      artifacts/        its artifacts

:class:`FallbackClient` forwards every call to the tracking store; the first call that finds the server unreachable
(connection refused, timed out, or failing with 5xx after MLflow's retries) switches the client, for the rest of
the process, to the run folder's store: the run is continued there under the same experiment and run name, and
the server's run and experiment ids are mapped to the local ones. Nothing waits on the server again. The waiting
is bounded: unless the user sets them, MLflow's HTTP settings become :data:`HTTP_DEFAULTS` (MLflow's own defaults,
7 retries with a factor-2 back-off and a 120 s timeout, can hold a training for many minutes), which bounds the
first failing call to :data:`LONGEST_WAIT` seconds. ``emseg runs sync RUN_DIR`` (:func:`emseg.engine.tracking.sync_run`)
uploads the local store's run afterwards; a training does so itself when the server is back by its end.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OFFLINE_DIR = "mlflow-offline"
# MLflow's HTTP settings emseg uses unless the environment sets them: 2 retries, back-off 1 s then 2 s, 20 s timeout
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def bounded_http() -> float:
    """Put :data:`HTTP_DEFAULTS` into the environment where unset; return the longest one MLflow call may then wait
    for an unreachable server (every try timing out, plus the back-off between tries and its jitter)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    retries = int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    factor = float(os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    jitter = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "1"))
    timeout = float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    return (retries + 1) * timeout + sum(factor * 2 ** i + jitter for i in range(retries))


LONGEST_WAIT = bounded_http()


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the tracking server could not be reached (not that it refused what was asked)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        return True
    text = str(error)
    return isinstance(error, MlflowException) and (
        "failed with exception" in text or "Max retries exceeded" in text or "too many 50" in text
        or "Connection refused" in text)


def local_uri(folder: str | Path) -> str:
    """The tracking URI of the offline store in ``folder`` (a run folder's :data:`OFFLINE_DIR`)."""
    return "sqlite:///" + str((Path(folder) / "mlflow.db").resolve())


class FallbackClient:
    """An ``mlflow.MlflowClient`` of ``tracking_uri`` that goes offline (see the module docstring) once
    :meth:`offline_into` has named the run folder and run; until then an unreachable server raises as before.

    ``on_offline(local_uri, local_run_id, reason)`` is called once, when the client switches.
    """

    def __init__(self, tracking_uri: str) -> None:
        import mlflow

        bounded_http()
        self.remote = mlflow.MlflowClient(tracking_uri)
        self.folder: Path | None = None
        self.experiment_name = self.run_name = None
        self.on_offline: Callable[[str, str, str], None] | None = None
        self.waited = 0.0  # seconds the failing call waited before the switch
        self._online()

    def _online(self) -> None:
        self.local = None
        self.remote_runs: set[str] = set()  # the server's ids of this run
        self.remote_experiments: set[str] = set()  # and of its experiment
        self.ids: dict[str, str] = {}  # offline: those ids -> the offline store's

    @property
    def tracking_uri(self) -> str:
        return self.remote.tracking_uri

    @property
    def offline(self) -> bool:
        return self.local is not None

    def offline_into(self, run_dir: str | Path, experiment_name: str, run_name: str,
                     on_offline: Callable[[str, str, str], None] | None = None) -> None:
        """Where and as what to continue when the server is away: ``run_dir``'s offline store, ``run_name`` in
        ``experiment_name``."""
        self.folder = Path(run_dir) / OFFLINE_DIR
        self.experiment_name, self.run_name, self.on_offline = experiment_name, run_name, on_offline
        self._online()  # a new run tries the server first

    def same_run(self, remote_run_id: str | None, remote_experiment_id: str | None = None) -> None:
        """The server's ids of the run and its experiment: offline, calls naming them go to the offline store's
        run and experiment."""
        self.remote_runs.update([remote_run_id] if remote_run_id else [])
        self.remote_experiments.update([remote_experiment_id] if remote_experiment_id else [])

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.remote, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.local is None:
                started = time.monotonic()
                try:
                    return attribute(*args, **kwargs)
                except Exception as err:
                    if self.folder is None or not unreachable(err):
                        raise
                    self.waited = time.monotonic() - started
                    self._go_offline(err)
            return getattr(self.local, name)(*self._mapped(args), **{k: self._mapped_value(k, v) for k, v in
                                                                     kwargs.items()})

        return call

    def _mapped(self, args: tuple) -> tuple:
        return (self.ids.get(args[0]) or args[0], *args[1:]) if args and isinstance(args[0], str) else args

    def _mapped_value(self, key: str, value: Any) -> Any:
        named = key in ("run_id", "experiment_id") and isinstance(value, str)
        return (self.ids.get(value) or value) if named else value

    def _go_offline(self, error: BaseException) -> None:
        import mlflow
        from mlflow.entities import RunStatus

        self.folder.mkdir(parents=True, exist_ok=True)
        uri = local_uri(self.folder)
        local = mlflow.MlflowClient(uri)
        experiment = local.get_experiment_by_name(self.experiment_name)
        experiment_id = experiment.experiment_id if experiment else local.create_experiment(
            self.experiment_name, artifact_location=(self.folder / "artifacts").resolve().as_uri())
        runs = [r for r in local.search_runs([experiment_id], f"attributes.run_name = '{self.run_name}'")
                if r.info.status != RunStatus.to_string(RunStatus.FINISHED)]
        run = runs[0] if runs else local.create_run(experiment_id, run_name=self.run_name)
        if runs:
            local.update_run(run.info.run_id, status="RUNNING")
        self.ids = {**{remote: experiment_id for remote in self.remote_experiments},
                    **{remote: run.info.run_id for remote in self.remote_runs}}
        self.local = local
        reason = " ".join(str(error).split())[:300]
        logger.warning("MLflow server %s unreachable (waited %.1f s: %s); logging run %s to %s from now on",
                       self.tracking_uri, self.waited, reason, self.run_name, uri)
        if self.on_offline is not None:
            self.on_offline(uri, run.info.run_id, reason)


def run_id_of(record: dict) -> str | None:
    """The MLflow run a run folder's record (``run.json``) logs to: the server's, else the offline store's."""
    return record.get("mlflow_run_id") or (record.get("mlflow_pending") or {}).get("run_id")


_CLIENTS: dict[str, FallbackClient] = {}


def shared_client(tracking_uri: str) -> FallbackClient:
    """The one :class:`FallbackClient` of ``tracking_uri`` in this process: the training's, validation's and
    overlay's handlers go offline together."""
    if tracking_uri not in _CLIENTS:
        _CLIENTS[tracking_uri] = FallbackClient(tracking_uri)
    return _CLIENTS[tracking_uri]
