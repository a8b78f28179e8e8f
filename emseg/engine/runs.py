"""A training run owns its results: one folder and one MLflow run that hold the same things.

    bundles/<name>/runs/<run_name>/
      run.json            the record: status, process, MLflow run id, epochs done, best score, network, config digest
      config.json         the config as run (command-line overrides included)
      checkpoint_last.pt  model, optimizer, LR schedule, epoch and best score: written atomically at the end of the
                          last epoch that ends within ``checkpoint_interval`` seconds of the last one (judged by the
                          longest epoch so far), at the end of the run, and when the run is stopped (SIGTERM,
                          Ctrl-C); resuming starts from it, so a crash repeats at most ``checkpoint_interval`` of
                          training (or one epoch, where an epoch takes longer), as the log says at the start
      model_best.pt       the selected weights: those with the best finite key metric of validation, or (selection
                          "last") those of the last validation, at the end of training
      metrics.csv         one row per epoch: training loss and, where validated, the validation scores
    bundles/<name>/models/model.pt, model.json
                          the promoted model and its sidecar (the run it came from, its score, its network):
                          replaced only when a run finishes successfully, with a finite best score

Nothing one run writes is written by another: runs have their own folders, names are unique, and
``models/`` changes only by promotion (atomic replacement). A rerun with the name of an unfinished run
resumes it; a run left RUNNING by a process that is gone is marked KILLED the next time the bundle trains.
"""

from __future__ import annotations

import atexit
import csv
import datetime
import hashlib
import io
import json
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from emseg.engine.offline import OFFLINE_DIR, run_id_of, shared_client
from emseg.engine.paths import running_workflow
from emseg.engine.registry import register_model
from emseg.engine.trained import BEST, PROMOTED, RECORD, SIDECAR, weights_record  # noqa: F401 (re-exported)
from emseg.errors import require_flag
from emseg.io.files import replace_atomically, sha256, write_csv_atomically, write_text_atomically
from emseg.networks import build_network

logger = logging.getLogger(__name__)

CONFIG, LAST, METRICS = "config.json", "checkpoint_last.pt", "metrics.csv"
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


LOSS_READBACK = 32  # iterations whose losses are read back from the device together (no wait every iteration)


class RunError(RuntimeError):
    """A run that cannot start or be used as asked; the message names the run folder and the fix."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a batch system's time limit) into KeyboardInterrupt, so a run saves a checkpoint
    and ends KILLED."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a reader never sees half a file. The bytes
    are made in memory first: torch's own file writer reports a full disk as "unexpected pos", Python's as
    ENOSPC, which :func:`emseg.io.files.replace_atomically` names."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    replace_atomically(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def _process_alive(pid: int | None, host: str | None) -> bool:
    """Whether the process that recorded a run still runs; another machine's process is assumed alive."""
    if host != socket.gethostname():
        return host is not None
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunFolder:
    """The files of one training run (``bundles/<name>/runs/<run_name>/``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def record(self) -> dict:
        """``run.json``, or an empty dict for a folder that has none."""
        path = self.file(RECORD)
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunError(f"{path}: not valid JSON ({err}); the run record is damaged") from err

    def update(self, **fields: Any) -> dict:
        """Merge ``fields`` into ``run.json`` (written atomically) and return the record."""
        record = {**self.record(), **fields, "updated": now()}
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.file(RECORD), json.dumps(record, indent=2, default=str) + "\n")
        return record

    def is_stale(self) -> bool:
        """RUNNING in the record, but its process is gone."""
        record = self.record()
        return record.get("status") == RUNNING and not _process_alive(record.get("pid"), record.get("host"))


def mark_stale_runs(runs_dir: str | Path, tracking_uri: str | None = None) -> list[str]:
    """Mark every run under ``runs_dir`` that says RUNNING but whose process is gone as KILLED, in its record and
    in MLflow; return their names."""
    marked = []
    for record_path in sorted(Path(runs_dir).glob(f"*/{RECORD}")):
        folder = RunFolder(record_path.parent)
        if folder.is_stale():
            record = folder.update(status=KILLED, ended=now(), reason="its process ended without closing the run")
            if tracking_uri and record.get("mlflow_run_id"):
                try:
                    _set_mlflow_status(tracking_uri, record["mlflow_run_id"], KILLED)
                except Exception as err:  # the folder says KILLED; the store is a copy of it
                    logger.warning("could not mark run %s KILLED in MLflow: %s", folder.name, err)
            logger.warning("run %s was left RUNNING by a process that is gone: marked KILLED", folder.name)
            marked.append(folder.name)
    return marked


def _log_best(tracking_uri: str | None, run_id: str | None, metrics: Mapping[str, float], epoch: int | None) -> None:
    """The selected validation's scores as ``best_<metric>`` and its ``best_epoch``, so the MLflow runs table shows
    what each run was selected by (a metric's column shows its last value: the last epoch's, not the best)."""
    if not (tracking_uri and run_id):
        return
    from mlflow.entities import Metric

    timestamp, step = int(time.time() * 1000), int(epoch or 0)
    values = [Metric(f"best_{k}", float(v), timestamp, step) for k, v in metrics.items()]
    if epoch is not None:
        values.append(Metric("best_epoch", float(epoch), timestamp, step))
    try:
        shared_client(tracking_uri).log_batch(run_id, metrics=values)
    except Exception as err:  # the run folder has the record; the store is a copy of it
        logger.warning("could not log the best validation scores to MLflow run %s: %s", run_id, err)


def _set_mlflow_status(tracking_uri: str, run_id: str, status: str) -> None:
    client = shared_client(tracking_uri)
    if status == RUNNING:
        client.update_run(run_id, status=RUNNING)
    else:
        client.set_terminated(run_id, status)


def resolved_section(parser, section: str) -> Any:
    """The config section ``section`` with every reference and expression replaced by its (JSON) value, so the
    section can be rebuilt without the rest of the config (``_target_`` and other ``_`` keys stay as written)."""

    def resolve(id_: str, raw: Any) -> Any:
        if isinstance(raw, dict):
            return {k: (v if k.startswith("_") else resolve(f"{id_}#{k}", v)) for k, v in raw.items()}
        if isinstance(raw, list):
            return [resolve(f"{id_}#{i}", v) for i, v in enumerate(raw)]
        if isinstance(raw, str) and raw.startswith(("@", "$", "%")):
            value = parser.get_parsed_content(id_)
            json.dumps(value)  # the saved network must be plain JSON
            return value
        return raw

    return resolve(section, parser[section])


def saved_network(network: Mapping) -> dict:
    """A resolved ``network_def`` as saved with weights: the pretrained-encoder file is left out, since the
    weights come from the checkpoint."""
    return {k: (None if k == "pretrained_encoder" else v) for k, v in network.items()}


def weights_path(bundle_root: str | Path, run_name: str | None = None) -> str:
    """``models/model.pt`` (the promoted model) for ``run_name`` None, else ``runs/<run_name>/model_best.pt``."""
    if run_name is None:
        return str(Path(bundle_root) / "models" / PROMOTED)
    folder = Path(bundle_root) / "runs" / str(run_name)
    if not folder.is_dir():
        runs = sorted(p.name for p in (Path(bundle_root) / "runs").glob("*/") if (p / RECORD).is_file())
        raise RunError(f"{folder}: no such run; runs of this bundle: {', '.join(runs) or 'none'}")
    return str(folder / BEST)


# keys of a network definition that choose how a trained network runs, not what it is: taken from the config
INFERENCE_KEYS = ("inference_depth",)


def network_for(weights: str | Path, network_def: Any, network_from: str = "saved") -> torch.nn.Module:
    """The network the ``weights`` were trained as: built from the network saved with them (``network_from``
    "saved", the default), or from the config's ``network_def`` ("config", for weights from elsewhere).

    ``network_def`` is the config's (parsed) network; it is used when nothing was saved with the weights, and
    its :data:`INFERENCE_KEYS` (UNet++'s pruning depth) apply to the saved network too.
    """

    if network_from not in ("saved", "config"):
        raise ValueError(f"network_from must be 'saved' or 'config', got {network_from!r}")
    saved = weights_record(weights).get("network") if network_from == "saved" else None
    if saved is None:
        return network_def
    saved = {k: (getattr(network_def, k) if k in INFERENCE_KEYS and hasattr(network_def, k) else v)
             for k, v in saved.items()}
    network = build_network(saved)
    config_state = network_def.state_dict() if isinstance(network_def, torch.nn.Module) else {}
    if {k: tuple(v.shape) for k, v in config_state.items()} != {k: tuple(v.shape) for k, v in network.state_dict().items()}:
        logger.warning("the config's network differs from the one %s was trained as; using the trained one (%s). "
                       "Pass --network_from config to use the config's.", weights, json.dumps(saved))
    return network


def _duration(seconds: float) -> str:
    """``300 s`` as ``5 min``; short ones in seconds."""
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def _finite_weights(network: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in network.state_dict().values() if t.is_floating_point())


class TrainingRun:
    """Ignite handler that makes a training run own its results (see the module docstring).

    Attach it to the trainer before every other handler: on an exception it saves (or, for a non-finite loss,
    refuses to save) before the MLflow tracker marks the run and re-raises.

    Args:
        output_dir: the run folder, ``bundles/<name>/runs/<run_name>``.
        save_dict: what a checkpoint holds and resuming restores: ``{"model": ..., "optimizer": ..., ...}``.
        validator: the validation evaluator, whose key metric picks ``model_best.pt``.
        models_dir: where a successful run promotes its best model (``bundles/<name>/models``).
        tracking_uri: the MLflow store (to mark stale runs and reopen a resumed one).
        checkpoint_interval: the most training a crash may repeat, in seconds: a checkpoint is written at the end
            of the last epoch before that much time has passed since the last one (0: every epoch).
        network_section: the config key of the network definition; it is recorded resolved (every reference
            replaced by its value), so the weights can be used without the config.
        extra: more fields for the record (data set, split, ...).
        register_model: when a finished run is promoted, also register its model in MLflow (:func:`promote`).
        best_model: the module whose weights the validator scored and ``model_best.pt`` saves (the weight
            average, :class:`emseg.engine.averaging.WeightAverage`); default ``save_dict["model"]``.
        selection: "best": ``model_best.pt`` holds the weights of the validation with the best finite key metric;
            "last": those of the last validation with a finite score (the end of training: validation always
            runs after the last epoch), for a metric too noisy to choose an epoch by.
    """

    def __init__(self, output_dir: str, save_dict: Mapping[str, Any], validator: Engine | None = None,
                 models_dir: str | None = None, tracking_uri: str | None = None, checkpoint_interval: float = 300.0,
                 network_section: str = "network_def", extra: Mapping | None = None,
                 register_model: bool = True, best_model: torch.nn.Module | None = None,
                 selection: str = "best") -> None:

        self.folder = RunFolder(output_dir)
        self.save_dict = dict(save_dict)
        self.best_model = self.save_dict["model"] if best_model is None else best_model
        if selection not in ("best", "last"):
            raise ValueError(f"model_selection must be 'best' or 'last', got {selection!r}")
        self.selection = selection
        self.validator = validator
        self.models_dir = Path(models_dir) if models_dir else None
        self.register_model = require_flag(register_model, "register_model")
        self.tracking_uri = tracking_uri
        self.checkpoint_interval = float(checkpoint_interval)
        workflow = running_workflow()
        self.network = saved_network(resolved_section(workflow.parser, network_section)) if workflow else None
        config = workflow.parser.get() if workflow else {}
        self.extra = {**dict(extra or {}), "tracking_uri": tracking_uri,
                      "config_digest": hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()}
        self.best: dict = {}
        self._last_save = 0.0
        self._epoch_started: float | None = None
        self._longest_epoch = 0.0  # seconds, validation included
        self._late_attached = False
        self._losses: list[tuple[int, torch.Tensor]] = []  # (iteration, loss) not read back yet
        self._epoch_metrics: dict[str, float] = {}
        self._trainer: Engine | None = None
        self._owns_folder = False  # set once this process has taken the run over: only then does it write there

    # --- wiring -------------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._read_losses)  # first: before validation, checkpoint
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exception)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validated)
        interrupt_on_sigterm()

    def _attach_late(self, engine: Engine) -> None:
        """Epoch-end and completion handlers run after every other handler (validation included)."""
        if not self._late_attached:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
            engine.add_event_handler(Events.COMPLETED, self._completed)
            self._late_attached = True

    # --- start and resume ---------------------------------------------------------------------------------
    def _start(self, engine: Engine) -> None:
        self._trainer = engine
        runs_dir = self.folder.path.parent
        mark_stale_runs(runs_dir, self.tracking_uri)
        record = self.folder.record()
        if record.get("status") == RUNNING:
            raise RunError(f"{self.folder.path}: run {self.folder.name} is running (process {record.get('pid')} on "
                           f"{record.get('host')}); wait for it or choose another --run_name")
        checkpoint = self.folder.file(LAST)
        if checkpoint.is_file():
            self._resume(engine, checkpoint, record)
        elif record:
            logger.warning("run %s has no checkpoint yet: it starts again from epoch 1", self.folder.name)
        self.folder.update(run_name=self.folder.name, status=RUNNING, pid=os.getpid(), host=socket.gethostname(),
                           started=record.get("started", now()), max_epochs=engine.state.max_epochs,
                           network=self.network, **self.extra)
        self._owns_folder = True
        logger.info("run %s: %d epochs, outputs in %s%s", self.folder.name, engine.state.max_epochs, self.folder.path,
                    f", tracked in MLflow at {self.tracking_uri}" if self.tracking_uri else "")
        logger.info("run %s: a crash (kill -9, power cut) repeats at most %s of training: checkpoint_interval is "
                    "%g s, or one epoch where an epoch takes longer; choose with --checkpoint_interval SECONDS (0: "
                    "every epoch)", self.folder.name, _duration(self.checkpoint_interval), self.checkpoint_interval)
        if run_id_of(record) and self.tracking_uri:
            _set_mlflow_status(self.tracking_uri, run_id_of(record), RUNNING)  # the tracker continues it
        self._last_save = time.monotonic()
        self._attach_late(engine)

    def _resume(self, engine: Engine, checkpoint: Path, record: dict) -> None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        for key, obj in self.save_dict.items():
            if key in state:
                obj.load_state_dict(state[key])
        epoch = int(state["epoch"])
        if epoch >= engine.state.max_epochs:
            raise RunError(f"{self.folder.path}: run {self.folder.name} has done {epoch} of {engine.state.max_epochs} "
                           f"epochs; pass a larger --epochs to train it further, or choose another --run_name")
        engine.state.epoch, engine.state.iteration = epoch, epoch * engine.state.epoch_length
        self.best = dict(state.get("best") or {})
        logger.info("resuming run %s from %s: epoch %d of %d (best %s)", self.folder.name, checkpoint, epoch,
                    engine.state.max_epochs, self.best or "none yet")
        self.folder.update(resumed=[*record.get("resumed", []), {"at": now(), "epoch": epoch}])

    # --- during training ----------------------------------------------------------------------------------
    def _check_loss(self, engine: Engine) -> None:
        """Keep the iteration's loss as it is (a tensor on the device); every :data:`LOSS_READBACK` iterations and
        at the end of each epoch (before validation and the checkpoint) they are read back at once and checked."""
        from monai.handlers import from_engine

        loss = from_engine(["loss"], first=True)(engine.state.output)
        loss = loss.detach().reshape(()).float() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        self._losses.append((engine.state.iteration, loss))
        if len(self._losses) >= LOSS_READBACK:
            self._read_losses(engine)

    def _read_losses(self, engine: Engine) -> None:
        losses, self._losses = self._losses, []
        if not losses:
            return
        values = torch.stack([loss.to(losses[0][1].device) for _, loss in losses]).cpu()  # one transfer
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            first = int(bad[0])
            iteration = losses[first][0]
            epoch = (iteration - 1) // engine.state.epoch_length + 1
            raise NonFiniteLossError(f"{self.folder.path}: training loss is {float(values[first])} at epoch {epoch}, "
                                     f"iteration {iteration}; nothing was saved from this point. Lower "
                                     f"learning_rate, or check the training images for NaN or infinite values")

    def _validated(self, validator: Engine) -> None:
        name = validator.state.key_metric_name
        self._epoch_metrics.update({k: float(v) for k, v in validator.state.metrics.items()
                                    if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)})
        value = float(validator.state.metrics.get(name, float("nan")))
        if not math.isfinite(value) and not (self.selection == "last" and _finite_weights(self.best_model)):
            logger.warning("validation %s is %s: not a candidate for the best model", name, value)
            return
        if not math.isfinite(value):  # "last" keeps the last weights even when nothing labelled scores them
            logger.warning("validation %s is %s (no labelled pixel to score?): the last weights are kept all the "
                           "same, as model_selection last asks; such a run is not promoted", name, value)
        if not self.best or value > self.best["value"] or self.selection == "last":
            epoch = self._trainer.state.epoch if self._trainer is not None else None
            save_atomically(self.best_model.state_dict(), self.folder.file(BEST))
            self.best = {"metric": name, "value": value, "epoch": epoch, "selection": self.selection}
            record = self.folder.update(best=self.best)
            _log_best(self.tracking_uri, run_id_of(record),
                      {k: v for k, v in self._epoch_metrics.items() if math.isfinite(v)}, epoch)
            logger.info("%s %s %.4f at epoch %s: saved %s", "new best" if self.selection == "best" else "selected",
                        name, value, epoch, self.folder.file(BEST))

    def _epoch_completed(self, engine: Engine) -> None:
        row = {"epoch": engine.state.epoch, **{k: float(v) for k, v in engine.state.metrics.items()
                                                if isinstance(v, (int, float))}, **self._epoch_metrics}
        self._epoch_metrics = {}
        self._append_metrics(row)
        ended = time.monotonic()
        self._longest_epoch = max(self._longest_epoch, ended - (self._epoch_started or self._last_save))
        self._epoch_started = ended
        # due when the next epoch would end past the interval: a crash then repeats at most the interval (or, where
        # one epoch takes longer, that epoch)
        due = ended - self._last_save + self._longest_epoch > self.checkpoint_interval
        if due or engine.state.epoch == engine.state.max_epochs:
            self._save_last(engine.state.epoch)
        self.folder.update(epochs_done=engine.state.epoch)

    def _append_metrics(self, row: dict) -> None:
        path = self.folder.file(METRICS)
        rows = list(csv.DictReader(path.open())) if path.is_file() else []
        rows.append(row)
        write_csv_atomically(path, rows, list(dict.fromkeys(k for r in rows for k in r)))

    def _save_last(self, epoch: int) -> None:
        state = {key: obj.state_dict() for key, obj in self.save_dict.items()}
        try:
            save_atomically({**state, "epoch": epoch, "best": self.best}, self.folder.file(LAST))
        except OSError as err:
            raise RunError(f"{err}; once it can be written there (free space, permissions), resume with --run_name "
                           f"{self.folder.name}") from err
        self._last_save = time.monotonic()

    def _keep_unscored(self, epoch: int) -> None:
        """"last" with no validation slice at all (a fine-tuning on one painted slice): the last weights are kept
        as ``model_best.pt``, unscored, so they can be used and scored; such a run is not promoted."""
        save_atomically(self.best_model.state_dict(), self.folder.file(BEST))
        name = getattr(self.validator.state, "key_metric_name", None) if self.validator is not None else None
        self.best = {"metric": name, "value": float("nan"), "epoch": epoch, "selection": self.selection}
        self.folder.update(best=self.best)
        logger.warning("run %s had no validation slice: its last weights are kept unscored in %s", self.folder.name,
                       self.folder.file(BEST))

    # --- the end ------------------------------------------------------------------------------------------
    def _exception(self, engine: Engine, error: BaseException) -> None:
        """Record why the run stopped; save a checkpoint unless the weights are not finite. Never re-raises: the
        MLflow tracker and MONAI's StatsHandler after it do. A run refused at the start (another process runs it,
        or it is finished) is left as it was."""
        if not self._owns_folder:
            return
        try:
            if isinstance(error, KeyboardInterrupt):
                try:
                    self._read_losses(engine)  # weights after a non-finite loss are not worth a checkpoint
                except NonFiniteLossError as nonfinite:
                    self.folder.update(status=FAILED, ended=now(), reason=f"{type(nonfinite).__name__}: {nonfinite}")
                    return
                self._save_last(engine.state.epoch - 1 if engine.state.iteration % engine.state.epoch_length else
                                engine.state.epoch)
                self.folder.update(status=KILLED, ended=now(), reason=str(error) or "interrupted")
                logger.warning("run %s stopped: checkpoint saved, resume with --run_name %s", self.folder.name,
                               self.folder.name)
            else:
                self.folder.update(status=FAILED, ended=now(), reason=f"{type(error).__name__}: {error}")
        except OSError as write_error:  # a full disk: the error that stopped the run is the one to report
            logger.warning("run %s: could not record how it ended (%s); its last checkpoint is as it was",
                           self.folder.name, write_error)

    def _completed(self, engine: Engine) -> None:
        if self.selection == "last" and not self.best and _finite_weights(self.best_model):
            self._keep_unscored(engine.state.epoch)
        record = self.folder.update(status=FINISHED, ended=now(), epochs_done=engine.state.epoch)
        self._promote(record)
        if record.get("mlflow_pending"):  # the last line (after Ignite's own): what to do about it
            atexit.register(logger.warning, "run %s finished, but the MLflow server %s was unreachable from %s on: "
                            "what it logged since is in %s; upload it with: emseg runs sync %s", self.folder.name,
                            self.tracking_uri, record["mlflow_pending"].get("since"), self.folder.file(OFFLINE_DIR),
                            self.folder.path)

    def _promote(self, record: dict) -> None:
        if self.models_dir is None:
            return
        if not self.best:
            logger.warning("run %s finished without a validated model: %s/model.pt is unchanged", self.folder.name,
                           self.models_dir)
            return
        if not math.isfinite(float(self.best.get("value", float("nan")))):  # "last" kept unscored weights
            logger.warning("run %s finished; its last weights are in %s but were not scored (validation %s is %s: "
                           "nothing labelled?), so %s/model.pt is unchanged; score them, then 'emseg bundle promote'",
                           self.folder.name, self.folder.file(BEST), self.best.get("metric"), self.best.get("value"),
                           self.models_dir)
            return
        promote(self.folder.path, self.models_dir, record, register=self.register_model)


def _register(record: Mapping, sidecar: Mapping, weights: Path, models_dir: Path) -> dict:
    """Register the promoted weights in MLflow (:func:`emseg.engine.registry.register_model`); a registry that
    cannot be reached leaves the promotion done and says so."""

    if record.get("mlflow_pending"):
        logger.warning("promoted, but not registered in MLflow: the server was unreachable; 'emseg runs sync %s' "
                       "uploads the run and registers its model", weights.parent)
        return {}
    try:
        # the bundle the run trained; the models folder's parent only for records from before it was kept
        return register_model({**record, **sidecar}, weights, record.get("bundle") or models_dir.parent.name)
    except Exception as err:  # the model is promoted on disk either way; the registry is a copy of the record
        logger.warning("promoted, but not registered in MLflow (%s: %s); register it later with 'emseg bundle "
                       "promote %s --run-name %s'", type(err).__name__, err, models_dir.parent, sidecar["run_name"])
        return {}


def _keep_parent(models_dir: Path, record: Mapping) -> None:
    """Before a fine-tuned run replaces the promoted model it started from (``init_from`` the bundle itself), keep
    that model as ``models/parent_<sha256[:12]>.pt`` (and its sidecar): a model a lab received is never lost."""
    target, parent = models_dir / PROMOTED, (record.get("parent") or {}).get("sha256")
    if not parent or not target.is_file() or sha256(target) != parent:
        return
    kept = models_dir / f"parent_{parent[:12]}.pt"
    if not kept.is_file():
        replace_atomically(kept, lambda tmp: shutil.copyfile(target, tmp))
        if (models_dir / SIDECAR).is_file():
            replace_atomically(kept.with_suffix(".json"), lambda tmp: shutil.copyfile(models_dir / SIDECAR, tmp))
        logger.info("kept the parent model %s as %s before promoting its fine-tuned run", target, kept)


def promote(run_dir: str | Path, models_dir: str | Path, record: Mapping | None = None, register: bool = True) -> Path:
    """Make the best model of the finished run in ``run_dir`` the bundle's model: ``models/model.pt`` and its
    sidecar ``models/model.json``, each replaced atomically, and (``register``, when the run was tracked) a new
    version of the MLflow registered model ``emseg-<bundle>`` whose name and version go into the sidecar. Refuses a
    run that did not finish or whose best score is not finite."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        runs = sorted(p.parent.name for p in folder.path.parent.glob(f"*/{RECORD}"))
        raise RunError(f"{folder.path}: no such run; runs of this bundle: {', '.join(runs) or 'none'}")
    record = dict(record or folder.record())
    best = record.get("best") or {}
    weights = folder.file(BEST)
    if record.get("status") != FINISHED:
        raise RunError(f"{folder.path}: run {folder.name} is {record.get('status', 'unknown')}, only a finished run "
                       f"is promoted")
    if not weights.is_file() or not math.isfinite(float(best.get("value", float("nan")))):
        raise RunError(f"{folder.path}: run {folder.name} has no best model with a finite validation score")
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / PROMOTED
    _keep_parent(models_dir, record)
    replace_atomically(target, lambda tmp: shutil.copyfile(weights, tmp))
    sidecar = {
        "run_name": folder.name,
        "mlflow_run_id": record.get("mlflow_run_id"),
        "tracking_uri": record.get("tracking_uri"),
        "metric": best.get("metric"),
        "value": best.get("value"),
        "epoch": best.get("epoch"),
        "selection": best.get("selection", "best"),
        "weights_sha256": sha256(target),
        "promoted": now(),
        **{k: record[k] for k in ("network", "config_digest", "dataset", "dataset_dir", "split", "class_names",
                                  "class_map", "parent", "unlabelled") if k in record},
    }
    if register and sidecar["mlflow_run_id"] and sidecar["tracking_uri"]:
        sidecar.update(_register(record, sidecar, weights, models_dir))
    write_text_atomically(models_dir / SIDECAR, json.dumps(sidecar, indent=2) + "\n")
    logger.info("promoted run %s (%s %.4f at epoch %s) to %s", folder.name, best.get("metric"), best.get("value"),
                best.get("epoch"), target)
    return target
