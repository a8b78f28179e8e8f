"""MLflow tracking shared by all bundles.

One local store at the project root (``sqlite:///<project>/mlruns.db``, artifacts in
``<project>/mlruns/``), one experiment per bundle, a unique run name per run.
``MLFLOW_TRACKING_URI`` overrides the store. :class:`MLflowTracker` extends MONAI's
``MLFlowHandler`` so that a run ends FAILED when its engine raises, the config as
run is logged as an artifact, the experiment is tagged as model development, and the run's
data, versions and commit are recorded; a training logs the link that opens it in the MLflow
UI's model-training view (:func:`run_page`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler
from monai.utils import path_to_sqlite_uri

from emseg.engine.offline import OFFLINE_DIR, shared_client, unreachable
from emseg.engine.paths import running_workflow
from emseg.engine.registry import emseg_version
from emseg.engine.runs import RunError, RunFolder, interrupt_on_sigterm, now, promote
from emseg.engine.trained import SIDECAR, TrainedModel, parent_params

logger = logging.getLogger(__name__)

STORE_NAME = "mlruns.db"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def unique_run_name(prefix: str) -> str:
    """``prefix-YYYYmmdd-HHMMSS-xxxxxxxx``: 32 random bits, so names made in the same second do not collide
    (two in 20 a second: about 1 in 10^7) and MONAI's handler never joins another unfinished run."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def default_tracking_uri(project_root: str | Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite store at ``project_root/mlruns.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or path_to_sqlite_uri(str(Path(project_root).resolve() / STORE_NAME))


_PREPARED: set[str] = set()


def prepare_store(tracking_uri: str) -> None:
    """Create (or migrate) a SQLite MLflow store once, under a file lock beside it.

    MLflow creates the tables of a new SQLite store on first use; two processes doing that at once break its
    migration for good ("table _alembic_tmp_tags already exists"). The lock makes the second wait until the first
    has finished, then find the store ready. Other stores (servers) need nothing.
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _PREPARED:
        return
    import mlflow

    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; create the store unlocked
        fcntl = None
    database = Path(tracking_uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            mlflow.MlflowClient(tracking_uri).search_experiments(max_results=1)
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _PREPARED.add(tracking_uri)


def running_bundle_config() -> dict | None:
    """The config of the MONAI bundle workflow running in this process (with command-line overrides), or None."""
    workflow = running_workflow()
    return None if workflow is None else workflow.parser.get()


def dataset_digest(items: Sequence[Mapping]) -> str:
    """sha256 (first 16 hex digits) of a datalist as the model sees it: each item's name, image and label."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(str(item.get("name", "")).encode())
        for key in ("image", "label"):
            if key in item:
                value = item[key]
                digest.update(np.ascontiguousarray(value).tobytes() if not isinstance(value, str) else value.encode())
    return digest.hexdigest()[:16]


def dataset_input(name: str, source: str | Path, items: Sequence[Mapping], context: str, split: str | None = None):
    """An MLflow dataset input: the data set ``name`` at ``source``, the digest of ``items`` (its ``split`` part
    used as ``context``: training, validation, test)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=str(name), digest=dataset_digest(items), source_type="local",
                      source=json.dumps({"uri": str(source)}), profile=json.dumps({"slices": len(items)}))
    tags = [InputTag("mlflow.data.context", context)] + ([InputTag("split", str(split))] if split else [])
    return DatasetInput(dataset, tags)


def training_inputs(name: str, source: str | Path, split, training, validation) -> list[dict]:
    """The two data sets a training run logs as MLflow inputs (:func:`dataset_input` each): the items of its
    ``training`` and ``validation`` data sets (MONAI datasets, their ``.data``)."""
    return [{"name": name, "source": source, "items": part.data, "context": context, "split": str(split)}
            for part, context in ((training, "training"), (validation, "validation"))]


def hyper_parameters(training: Mapping, data: Mapping, network: Mapping, parent: TrainedModel | None) -> dict:
    """A training run's MLflow params: the bundle's training, data and network choices and, when it starts from a
    trained model, that parent (:func:`emseg.engine.trained.parent_params`)."""
    return {**training, **data, **network, **parent_params(parent)}


def git_commit(folder: str | Path) -> tuple[str, bool] | None:
    """The commit checked out in ``folder``'s git work tree and whether files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None


def source_tags(project_root: str | Path, bundle_root: str | Path) -> dict[str, str]:
    """Tags that say what made a run: emseg's version, the bundle's version (its metadata.json) and the git
    commit of the project (MLflow's own ``mlflow.source.git.commit``, shown in the UI), with ``emseg.git_dirty``."""

    tags = {"emseg.version": emseg_version()}
    metadata = Path(bundle_root) / "configs" / "metadata.json"
    if metadata.is_file():
        tags["emseg.bundle_version"] = str(json.loads(metadata.read_text()).get("version"))
    commit = git_commit(project_root)
    if commit is not None:
        tags["mlflow.source.git.commit"], tags["emseg.git_dirty"] = commit[0], str(commit[1]).lower()
    return tags


WORKFLOW = "machine_learning"  # the MLflow 3 UI's model-training view (its default is the GenAI view)


def run_page(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment (or run), in the model-training view: MLflow 3's UI picks the view from
    the ``workflowType`` URL parameter (remembered afterwards), not from the experiment's tags."""
    run = f"/runs/{run_id}" if run_id else ""
    return f"#/experiments/{experiment_id}{run}?workflowType={WORKFLOW}"


def _once_at_a_time(write, done, retry=None) -> None:
    """``write`` to a store that other runs may write the same row to at the same moment (a shared server's
    PostgreSQL refuses the second insert of an experiment tag or a data set): if it fails and ``done`` says the
    row is there, that is success; else ``retry`` (the other writer has made the shared row now) or fail."""
    from mlflow.exceptions import MlflowException

    try:
        write()
    except MlflowException:
        time.sleep(0.5)
        if done():
            return
        if retry is None:
            raise
        retry()


ITERATION_BATCH = 100  # per-iteration metrics logged together (MLflow takes up to 1000 per call)


class MLflowTracker(MLFlowHandler):
    """MONAI's MLFlowHandler plus failure status, config artifact, experiment tag, run folder and lineage.

    Args:
        config_path: where to write the running bundle's config (JSON) at start; it is
            logged as an artifact when it lies in ``artifacts``. None: do not write it.
        run_dir: a training run's folder (:class:`emseg.engine.runs.RunFolder`): the MLflow run id goes into
            its record, and a resumed run continues the same MLflow run.
        parent_run_id: the MLflow run this one derives from (an evaluation's training run): this run is tagged as
            its child, and at the end this run's metrics are logged to the parent too, prefixed by
            ``parent_prefix`` (e.g. ``test_v_rand`` on the training run).
        datasets: data the run uses, each ``{"name", "source", "items", "context", "split"}`` (see
            :func:`dataset_input`), logged as MLflow dataset inputs when the run starts.
        tags: more run tags (:func:`source_tags`: versions and git commit).
        All other arguments are those of ``monai.handlers.MLFlowHandler``.
    """

    def __init__(self, *args: Any, config_path: str | None = None, run_dir: str | None = None,
                 parent_run_id: str | None = None, parent_prefix: str = "", datasets: Sequence[Mapping] = (),
                 tags: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        tracking_uri = kwargs.get("tracking_uri") or (args[0] if args else None)
        if tracking_uri:
            prepare_store(tracking_uri)
        super().__init__(*args, **kwargs)
        # one client per store in the process, which continues in the run folder when the server is away
        self.client = shared_client(self.client.tracking_uri)
        if run_dir:
            self.client.offline_into(run_dir, self.experiment_name, self.run_name, self._went_offline)
            self.client.same_run(RunFolder(run_dir).record().get("mlflow_run_id"))
        self.config_path, self.run_dir = config_path, run_dir
        self.parent_run_id, self.parent_prefix = parent_run_id, parent_prefix
        self.datasets, self.tags = list(datasets), dict(tags or {})
        self._pending: list = []  # per-iteration (key, value, timestamp, step), logged in batches

    def attach(self, engine: Engine) -> None:
        # Registered first so it runs before StatsHandler re-raises the exception.
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.fail)
        if self.parent_run_id:
            engine.add_event_handler(Events.COMPLETED, self._log_to_parent)
        super().attach(engine)
        interrupt_on_sigterm()

    def start(self, engine: Engine) -> None:
        super().start(engine)
        run_id = self.cur_run.info.run_id
        if not self.client.offline:
            self.client.same_run(run_id, self.cur_run.info.experiment_id)
        if self.experiment is not None and self.experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            experiment_id = self.experiment.experiment_id
            _once_at_a_time(lambda: self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND),
                            lambda: self.client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG)
                            == EXPERIMENT_KIND)
        if self.run_dir and not self.client.offline:
            RunFolder(self.run_dir).update(mlflow_run_id=run_id, tracking_uri=self.client.tracking_uri)
        elif self.run_dir:
            RunFolder(self.run_dir).update(tracking_uri=self.client.tracking_uri)
        if self.parent_run_id and not self._parent_in_store():
            logger.warning("the training run %s is not in the MLflow store %s (the weights were trained elsewhere); "
                           "this run's scores are logged to this run only", self.parent_run_id, self.client.tracking_uri)
            self.parent_run_id = None
        if self.parent_run_id:
            self.client.set_tag(run_id, "mlflow.parentRunId", self.parent_run_id)
        for key, value in self.tags.items():
            self.client.set_tag(run_id, key, value)
        if self.run_dir:
            logger.info("MLflow run %s at %s; in the MLflow UI: %s", run_id, self.client.tracking_uri,
                        run_page(self.cur_run.info.experiment_id, run_id))
        if self.datasets and engine.state.epoch == 0:  # a resumed run has them already
            inputs = [dataset_input(**spec) for spec in self.datasets]
            _once_at_a_time(lambda: self.client.log_inputs(run_id, datasets=inputs),
                            lambda: len(self.client.get_run(run_id).inputs.dataset_inputs) >= len(inputs),
                            retry=lambda: self.client.log_inputs(run_id, datasets=inputs))
        if self.config_path and engine.state.epoch == 0:
            config = running_bundle_config()
            if config is not None:
                Path(self.config_path).parent.mkdir(parents=True, exist_ok=True)
                Path(self.config_path).write_text(json.dumps(config, indent=2, default=str))
                self.client.log_artifact(self.cur_run.info.run_id, self.config_path)

    def iteration_completed(self, engine: Engine) -> None:
        """The iteration's loss (and learning rates) wait, as they are, for a batch of :data:`ITERATION_BATCH`: a
        loss stays a tensor on its device until the batch is read back in one transfer, so the training loop does
        not wait for the device every iteration; one SQLite write costs about 5 ms besides."""
        if self.iteration_logger is not None:
            return super().iteration_completed(engine)
        loss = self.output_transform(engine.state.output)
        if loss is None or not self.cur_run:
            return
        values = dict(loss) if isinstance(loss, Mapping) else {self.tag_name: loss}
        optimizer = getattr(engine, "optimizer", None)
        for i, group in enumerate(optimizer.param_groups if optimizer is not None else []):
            values.update({f"{name}_group_{i}": float(group[name]) for name in self.optimizer_param_names})
        timestamp, step = int(time.time() * 1000), engine.state.iteration
        self._pending += [(key, value.detach() if isinstance(value, torch.Tensor) else float(value), timestamp, step)
                          for key, value in values.items()]
        if len(self._pending) >= ITERATION_BATCH:
            self._flush()

    def _flush(self) -> None:
        from mlflow.entities import Metric

        if self._pending and self.cur_run:
            tensors = [value.reshape(()).float() for _, value, _, _ in self._pending if isinstance(value, torch.Tensor)]
            read = iter(torch.stack(tensors).cpu().tolist() if tensors else [])  # one transfer for the batch
            metrics = [Metric(key, next(read) if isinstance(value, torch.Tensor) else value, timestamp, step)
                       for key, value, timestamp, step in self._pending]
            self.client.log_batch(run_id=self.cur_run.info.run_id, metrics=metrics, params=[], tags=[])
        self._pending = []

    def _log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Epoch metrics and anything else: logged at once, after the iterations' that wait."""
        self._flush()
        super()._log_metrics(metrics, step)

    def epoch_completed(self, engine: Engine) -> None:
        self._flush()
        params = getattr(engine.state, "run_params", None)  # e.g. the evaluation report's chosen thresholds
        if params and self.cur_run:
            self._log_params(dict(params))
        super().epoch_completed(engine)

    def close(self) -> None:
        self._flush()
        super().close()
        if self.run_dir and RunFolder(self.run_dir).record().get("mlflow_pending"):
            try:  # the server may be back: catch it up now
                sync_run(self.run_dir, promoted=False)
            except Exception as err:
                if not unreachable(err):
                    raise
                logger.warning("MLflow server %s still unreachable at the end of run %s", self.client.tracking_uri,
                               self.run_name)

    def _went_offline(self, uri: str, local_run_id: str, reason: str) -> None:
        folder = RunFolder(self.run_dir)
        pending = folder.record().get("mlflow_pending") or {}
        folder.update(mlflow_pending={"store": uri, "run_id": local_run_id, "since": pending.get("since", now()),
                                      "reason": reason})

    def _log_params(self, params: dict[str, Any]) -> None:
        # MLflow limits a param value to 500 characters; the whole config is an artifact.
        params = {k: (str(v)[:497] + "...") if len(str(v)) > 500 else v for k, v in params.items()}
        logged = self.client.get_run(self.cur_run.info.run_id).data.params if self.cur_run else {}
        for key in [k for k in params if k in logged]:  # a resumed run: MLflow refuses to change a param
            if str(params[key]) != logged[key]:
                logger.warning("param %s stays %s in MLflow run %s (now %s)", key, logged[key], self.cur_run.info.run_id,
                               params[key])
            del params[key]
        super()._log_params(params)

    def _parent_in_store(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(self.parent_run_id)
        except MlflowException:
            return False
        return True

    def _log_to_parent(self, engine: Engine) -> None:
        if not self.parent_run_id:  # not in this store (see start)
            return
        metrics = {self.parent_prefix + k: float(v) for k, v in engine.state.metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key, value in metrics.items():
            self.client.log_metric(self.parent_run_id, key, value)

    def fail(self, engine: Engine, error: BaseException) -> None:
        """Mark the run FAILED (KILLED on Ctrl-C), then let the error propagate."""
        from mlflow.entities import RunStatus

        if self.cur_run is not None:
            try:
                self._flush()
            except Exception as flush_error:  # the training's own error is the one to report
                logger.warning("could not log the last iteration metrics: %s", flush_error)
            status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
            try:
                self.client.set_terminated(self.cur_run.info.run_id, RunStatus.to_string(status))
            except Exception as status_error:  # e.g. a full disk under a local store: report the training's error
                logger.warning("could not mark MLflow run %s %s: %s", self.cur_run.info.run_id,
                               RunStatus.to_string(status), status_error)
            finally:
                self.cur_run = None
        raise error


def _artifact_files(artifact_uri: str) -> dict[str, Path]:
    """The files under a local artifact root (``file://`` URI): their artifact path -> file."""
    from urllib.parse import unquote, urlparse

    root = Path(unquote(urlparse(artifact_uri).path)) if artifact_uri.startswith("file:") else Path(artifact_uri)
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()} if root.is_dir() else {}


def _remote_artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for info in client.list_artifacts(run_id, path):
        found |= _remote_artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def sync_run(run_dir: str | Path, promoted: bool = True) -> dict:
    """Upload what the run in ``run_dir`` logged to its offline store (:mod:`emseg.engine.offline`) while the
    tracking server was away, into the server's run (created, with the run's name, if the server never saw it):
    params, tags, every metric value not there yet (so a second sync adds nothing), data set inputs, artifacts and
    the final status. Then (``promoted``) register the run's model if the bundle promoted it while the server was
    away. Returns counts of what was uploaded; the run record then names the server's run and no pending store."""
    import mlflow
    from mlflow.entities import Param, RunTag

    folder = RunFolder(run_dir)
    record = folder.record()
    if not record:
        raise RunError(f"{folder.path}: no run record ({folder.file('run.json').name}); give a run folder, "
                       f"bundles/<name>/runs/<run_name>")
    pending, uri = record.get("mlflow_pending"), record.get("tracking_uri")
    counts = {"metrics": 0, "params": 0, "tags": 0, "inputs": 0, "artifacts": 0}
    if pending:
        local = mlflow.MlflowClient(pending["store"])
        run = local.get_run(pending["run_id"])
        remote = mlflow.MlflowClient(uri)
        run_id = record.get("mlflow_run_id") or _server_run(remote, local, run)
        folder.update(mlflow_run_id=run_id)  # an interrupted sync continues this run
        target = remote.get_run(run_id)
        params = [Param(k, v) for k, v in run.data.params.items() if k not in target.data.params]
        tags = [RunTag(k, v) for k, v in run.data.tags.items()
                if k != "mlflow.runName" and target.data.tags.get(k) != v]
        metrics = []
        for key in run.data.metrics:
            there = {(m.step, m.timestamp, m.value) for m in remote.get_metric_history(run_id, key)}
            metrics += [m for m in local.get_metric_history(run.info.run_id, key)
                        if (m.step, m.timestamp, m.value) not in there]
        for part in _chunks(params, 100):
            remote.log_batch(run_id, params=part)
        for part in _chunks(tags, 100):
            remote.log_batch(run_id, tags=part)
        for part in _chunks(metrics, 1000):
            remote.log_batch(run_id, metrics=part)
        logged = {(d.dataset.name, d.dataset.digest) for d in target.inputs.dataset_inputs}
        inputs = [d for d in run.inputs.dataset_inputs if (d.dataset.name, d.dataset.digest) not in logged]
        if inputs:
            remote.log_inputs(run_id, datasets=inputs)
        there = _remote_artifacts(remote, run_id)
        artifacts = {path: file for path, file in _artifact_files(run.info.artifact_uri).items() if path not in there}
        for path, file in artifacts.items():
            parent = str(Path(path).parent)
            remote.log_artifact(run_id, str(file), None if parent == "." else parent)
        if run.info.status != "RUNNING":
            remote.set_terminated(run_id, run.info.status, end_time=run.info.end_time)
        counts = {"metrics": len(metrics), "params": len(params), "tags": len(tags), "inputs": len(inputs),
                  "artifacts": len(artifacts)}
        record = folder.update(mlflow_pending=None, mlflow_synced={"at": now(), **counts})
        if run.info.status != "RUNNING":  # everything is on the server now; the run may go on offline again
            shutil.rmtree(folder.file(OFFLINE_DIR), ignore_errors=True)
        logger.info("run %s uploaded to MLflow run %s at %s: %s", folder.name, run_id, uri,
                    ", ".join(f"{v} {k}" for k, v in counts.items()))
    sidecar_path = folder.path.parent.parent / "models" / SIDECAR
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    if promoted and sidecar.get("run_name") == folder.name and not sidecar.get("model_version"):
        promote(folder.path, sidecar_path.parent, record, register=True)
        counts["registered"] = json.loads(sidecar_path.read_text()).get("model_version")
    return counts


def _server_run(remote, local, run) -> str:
    """The server's run named as ``run`` (of ``local``'s store) in the experiment of the same name, created if
    missing."""
    name = local.get_experiment(run.info.experiment_id).name
    experiment = remote.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else remote.create_experiment(name)
    found = remote.search_runs([experiment_id], f"attributes.run_name = '{run.info.run_name}'")
    if found:
        return found[0].info.run_id
    return remote.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name).info.run_id
