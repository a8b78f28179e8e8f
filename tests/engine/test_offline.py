"""The MLflow client that goes on in the run folder when the server is away, and ``emseg runs sync`` (the real
server drills are in test_tracking_server.py): nothing listens at the server's port here, and the "server" a run is
synced to is a second SQLite store."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param

from emseg.engine.offline import OFFLINE_DIR, FallbackClient, local_uri


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: connections are refused


def test_an_unreachable_server_is_waited_for_once_then_the_run_goes_on_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    client = FallbackClient(f"http://127.0.0.1:{closed_port()}")
    switched = []
    client.offline_into(tmp_path / "run", "emseg-unet", "r1", lambda *args: switched.append(args))
    server_run = "0" * 32
    client.same_run(server_run, "7")
    started = time.monotonic()
    client.log_batch(run_id=server_run, metrics=[Metric("train_loss", 0.5, 1000, 1)])
    first = time.monotonic() - started
    started = time.monotonic()
    for epoch in (2, 3):
        client.log_batch(run_id=server_run, metrics=[Metric("train_loss", 0.5 / epoch, 1000 + epoch, epoch)])
    client.set_experiment_tag("7", "kind", "test")
    later = time.monotonic() - started
    assert client.offline and 0 < client.waited <= first < 10 and later < 2
    (uri, run_id, reason) = switched[0]
    assert len(switched) == 1 and uri == local_uri(tmp_path / "run" / OFFLINE_DIR) and "127.0.0.1" in reason
    local = mlflow.MlflowClient(uri)
    run = local.get_run(run_id)
    assert run.info.run_name == "r1" and run.info.status == "RUNNING"
    assert [m.step for m in local.get_metric_history(run_id, "train_loss")] == [1, 2, 3]
    assert local.get_experiment(run.info.experiment_id).tags["kind"] == "test"
    assert client.get_run(server_run).info.run_id == run_id  # the server's id names the local run

    client.offline_into(tmp_path / "run2", "emseg-unet", "r2")  # the next run tries the server again
    assert not client.offline


def offline_run(folder: Path, server: str, server_run: str | None) -> str:
    """A run folder whose run logged epochs 1-3, a param, a tag, an artifact and FINISHED to its offline store."""
    store = mlflow.MlflowClient(local_uri(folder / OFFLINE_DIR))
    experiment = store.create_experiment("emseg-unet", artifact_location=(folder / OFFLINE_DIR / "artifacts").as_uri())
    run = store.create_run(experiment, run_name=folder.name)
    store.log_batch(run.info.run_id, metrics=[Metric("train_loss", 1.0 / e, 1000 + e, e) for e in (1, 2, 3)],
                    params=[Param("epochs", "3")])
    store.set_tag(run.info.run_id, "emseg.version", "test")
    (folder / "metrics.csv").write_text("epoch,train_loss\n1,1.0\n")
    store.log_artifact(run.info.run_id, str(folder / "metrics.csv"))
    store.set_terminated(run.info.run_id, "FINISHED")
    record = {"run_name": folder.name, "status": "FINISHED", "tracking_uri": server,
              "mlflow_pending": {"store": local_uri(folder / OFFLINE_DIR), "run_id": run.info.run_id}}
    if server_run:
        record["mlflow_run_id"] = server_run
    (folder / "run.json").write_text(json.dumps(record))
    return run.info.run_id


def sync(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emseg.cli", "runs", "sync", str(folder)], capture_output=True,
                          text=True, timeout=300)


def test_sync_uploads_what_the_server_missed_exactly_once(tmp_path):
    server = f"sqlite:///{tmp_path}/server.db"
    remote = mlflow.MlflowClient(server)
    experiment = remote.create_experiment("emseg-unet")
    started = remote.create_run(experiment, run_name="went-offline")
    # epoch 1 reached the server before it went away (the call whose answer was lost is logged again offline)
    remote.log_batch(started.info.run_id, metrics=[Metric("train_loss", 1.0, 1001, 1)])
    folder = tmp_path / "bundles" / "unet" / "runs" / "went-offline"
    folder.mkdir(parents=True)
    offline_run(folder, server, started.info.run_id)
    never = tmp_path / "bundles" / "unet" / "runs" / "never-online"
    never.mkdir()
    offline_run(never, server, None)

    for run_dir in (folder, never):
        done = sync(run_dir)
        assert done.returncode == 0 and "metrics" in done.stdout, done.stdout + done.stderr
        record = json.loads((run_dir / "run.json").read_text())
        assert not record["mlflow_pending"] and record["mlflow_synced"]["artifacts"] == 1
        assert not (run_dir / OFFLINE_DIR).exists()
        run = remote.get_run(record["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
        assert run.data.params == {"epochs": "3"} and run.data.tags["emseg.version"] == "test"
        assert [m.step for m in remote.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
        assert [a.path for a in remote.list_artifacts(run.info.run_id)] == ["metrics.csv"]
    assert json.loads((folder / "run.json").read_text())["mlflow_run_id"] == started.info.run_id
    again = sync(folder)
    assert again.returncode == 0 and "nothing to upload" in again.stdout
    assert len(remote.get_metric_history(started.info.run_id, "train_loss")) == 3


def test_sync_of_a_folder_that_is_no_run_says_so(tmp_path):
    done = sync(tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (f"emseg: error: {tmp_path}: no run record (run.json); give a run "
                                                    f"folder, bundles/<name>/runs/<run_name>")
