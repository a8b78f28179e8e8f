"""MLflow tracking shared by all bundles.

One local store at the project root (``sqlite:///<project>/mlruns.db``, artifacts in
``<project>/mlruns/``), one experiment per bundle, a unique run name per run.
``MLFLOW_TRACKING_URI`` overrides the store. :class:`MLflowTracker` extends MONAI's
``MLFlowHandler`` so that a run ends FAILED when its engine raises, the config as
run is logged as an artifact, and the MLflow UI opens the experiment in its
model-development view.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler
from monai.utils import path_to_sqlite_uri

from emseg.bundle.paths import running_workflow

logger = logging.getLogger(__name__)

STORE_NAME = "mlruns.db"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def unique_run_name(prefix: str) -> str:
    """``prefix-YYYYmmdd-HHMMSS-xxxx``: unique, so MONAI's handler never joins another unfinished run."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def default_tracking_uri(project_root: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite store at ``project_root/mlruns.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or path_to_sqlite_uri(str(Path(project_root).resolve() / STORE_NAME))


def running_bundle_config() -> dict | None:
    """The config of the MONAI bundle workflow running in this process (with command-line overrides), or None."""
    workflow = running_workflow()
    return None if workflow is None else workflow.parser.get()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a batch system's time limit) into KeyboardInterrupt, so runs end KILLED."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


class MLflowTracker(MLFlowHandler):
    """MONAI's MLFlowHandler plus failure status, config artifact and experiment tag.

    Args:
        config_path: where to write the running bundle's config (JSON) at start; it is
            logged as an artifact when it lies in ``artifacts``. None: do not write it.
        All other arguments are those of ``monai.handlers.MLFlowHandler``.
    """

    def __init__(self, *args: Any, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_path = config_path

    def attach(self, engine: Engine) -> None:
        # Registered first so it runs before StatsHandler re-raises the exception.
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.fail)
        super().attach(engine)
        _interrupt_on_sigterm()

    def start(self, engine: Engine) -> None:
        super().start(engine)
        if self.experiment is not None and self.experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self.client.set_experiment_tag(self.experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if self.config_path and engine.state.epoch == 0:
            config = running_bundle_config()
            if config is not None:
                Path(self.config_path).parent.mkdir(parents=True, exist_ok=True)
                Path(self.config_path).write_text(json.dumps(config, indent=2, default=str))
                self.client.log_artifact(self.cur_run.info.run_id, self.config_path)

    def _log_params(self, params: dict[str, Any]) -> None:
        # MLflow limits a param value to 500 characters; the whole config is an artifact.
        super()._log_params({k: (str(v)[:497] + "...") if len(str(v)) > 500 else v for k, v in params.items()})

    def fail(self, engine: Engine, error: BaseException) -> None:
        """Mark the run FAILED (KILLED on Ctrl-C), then let the error propagate."""
        from mlflow.entities import RunStatus

        if self.cur_run is not None:
            status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
            try:
                self.client.set_terminated(self.cur_run.info.run_id, RunStatus.to_string(status))
            finally:
                self.cur_run = None
        raise error
