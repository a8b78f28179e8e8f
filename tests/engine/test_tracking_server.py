"""A tracking server a lab shares: PostgreSQL behind ``mlflow server`` with a shared artifact root, on 127.0.0.1;
two tiny trainings at once log to it through ``MLFLOW_TRACKING_URI=http://...`` and both runs, their artifacts and
their registered model versions arrive."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import config, copy_bundles, overrides, tiny_training

pytestmark = pytest.mark.slow

POSTGRES_BIN = Path("/usr/lib/postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(POSTGRES_BIN.glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def _as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run as the ``postgres`` user then."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server (Debian's package, which .ci/run installs) on 127.0.0.1 with a database ``mlflow``."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    # a folder the postgres user can reach (pytest's own temporary folders are private to the user running it)
    root = Path(tempfile.mkdtemp(prefix="emseg-postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    done = _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"])
    assert done.returncode == 0, done.stderr
    port = _free_port()
    done = _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
                         f"-p {port} -k {sockets} -h 127.0.0.1"])
    assert done.returncode == 0, done.stderr + (root / "log").read_text()
    try:
        created = _as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow",
                                "mlflow"])
        assert created.returncode == 0, created.stderr
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on the PostgreSQL store at a fixed port, artifacts proxied into a shared folder; it can be
    stopped and started again (a restart of the lab's server)."""

    def __init__(self, backend: str, artifacts: Path, log: Path) -> None:
        self.backend, self.artifacts, self.log_path = backend, artifacts, log
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
                 "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "2"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while not self.healthy():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log_path.read_text()[-3000:]
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            self.process.wait(timeout=60)
        while self.healthy():  # until the port answers no more
            time.sleep(0.2)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL store, artifacts proxied into a shared folder."""
    artifacts = tmp_path_factory.mktemp("shared-artifacts")
    server = MlflowServer(postgres, artifacts, artifacts.parent / "mlflow-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_two_trainings_at_once_against_a_shared_server(tracking_server, tmp_path, isbi_dir):
    import mlflow

    uri, artifacts = tracking_server.uri, tracking_server.artifacts
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    projects = [copy_bundles(tmp_path / f"lab{i}", ["unet"]) for i in (1, 2)]
    tiny = overrides(dataset_dir=str(isbi_dir), download="False", epochs="1", epoch_length="2", val_interval="1",
                     batch_size="2", crops_per_slice="2", patch_size="[64,64]", features="[8,8,16,32,64,8]")
    runs = [subprocess.Popen([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                              config(project, "unet", "train.json"), *tiny], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for project in projects]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(output[-3000:] for output in outputs)
    assert not any((project / "mlruns.db").exists() for project in projects)  # nothing went to a local store

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("emseg-unet")
    found = {r.info.run_name: r for r in client.search_runs(experiment.experiment_id)}
    sidecars = [json.loads((p / "bundles" / "unet" / "models" / "model.json").read_text()) for p in projects]
    assert {s["run_name"] for s in sidecars} <= set(found) and len({s["run_name"] for s in sidecars}) == 2
    for sidecar in sidecars:
        run = found[sidecar["run_name"]]
        assert run.info.status == "FINISHED" and sidecar["tracking_uri"] == uri
        assert {"config.json", "model_best.pt", "metrics.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        version = client.get_model_version("emseg-unet", sidecar["model_version"])
        assert version.run_id == run.info.run_id
    assert sorted(int(s["model_version"]) for s in sidecars) == [1, 2]
    assert any(artifacts.rglob("model_best.pt"))  # the artifacts are in the shared root, proxied by the server


class Training:
    """A tiny training of the U-Net bundle in ``project`` against ``uri``, its output gathered line by line."""

    def __init__(self, project: Path, uri: str, isbi_dir: Path, epochs: int, run_name: str, **values) -> None:
        import threading

        self.project, self.run_dir = project, project / "bundles" / "unet" / "runs" / run_name
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        args = tiny_training(dataset_dir=isbi_dir, epochs=epochs, epoch_length=2, register_model="True", **values)
        self.process = subprocess.Popen([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                                         config(project, "unet", "train.json"), *args, "--run_name", run_name],
                                        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def epochs_done(self) -> int:
        metrics = self.run_dir / "metrics.csv"
        return len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else 0

    def wait_for(self, condition, what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the training ended before {what}:\n" + "".join(self.lines[-40:])
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n" + "".join(self.lines[-40:])
            time.sleep(0.2)

    def finish(self, timeout: float = 900) -> str:
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=60)
        output = "".join(self.lines)
        assert self.process.returncode == 0, output[-5000:]
        return output


def _waited(output: str) -> float:
    """Seconds the training waited on the unreachable server before going on offline (from its log)."""
    import re

    found = re.findall(r"unreachable \(waited ([0-9.]+) s", output)
    assert len(found) == 1, output[-5000:]
    return float(found[0])


def _complete_in_mlflow(uri: str, run_dir: Path, epochs: int) -> None:
    """The server's run of ``run_dir`` is FINISHED with each epoch's metrics exactly once and the run's files."""
    import mlflow

    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "FINISHED" and not record.get("mlflow_pending"), record
    client = mlflow.MlflowClient(uri)
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(1, epochs + 1)), steps
    for key in run.data.metrics:
        history = [(m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)]
        assert len(history) == len(set(history)), f"{key} logged twice: {history}"
    assert {"config.json", "model_best.pt", "metrics.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len(run.inputs.dataset_inputs) == 2 and run.data.params["epochs"] == str(epochs)


def test_a_training_outlives_its_server_going_away_and_catches_it_up(tracking_server, tmp_path, isbi_dir):
    """The server stops after the second epoch and is started again: the training goes on into its run folder's store without waiting
    more than LONGEST_WAIT, and when the server is back by its end it uploads what the server missed."""
    from emseg.engine.offline import LONGEST_WAIT

    project = copy_bundles(tmp_path / "lab", ["unet"])
    epochs = 60  # long enough for the server to be back before the end
    training = Training(project, tracking_server.uri, isbi_dir, epochs, "outage", val_interval=10)
    try:
        training.wait_for(lambda: training.epochs_done() >= 2, "second epoch")
        tracking_server.stop()
        training.wait_for(lambda: (training.run_dir / "mlflow-offline" / "mlflow.db").is_file(), "offline store")
        assert training.epochs_done() < epochs - 5, "the training was too short to restart the server within it"
    finally:
        tracking_server.start()
    output = training.finish()
    assert _waited(output) <= LONGEST_WAIT
    assert "emseg runs sync" not in output.splitlines()[-1]
    _complete_in_mlflow(tracking_server.uri, training.run_dir, epochs)
    assert not (training.run_dir / "mlflow-offline").exists()  # uploaded, so removed
    sidecar = json.loads((project / "bundles" / "unet" / "models" / "model.json").read_text())
    assert sidecar["run_name"] == "outage" and sidecar["model_version"]  # registered once the server was back


def test_a_training_started_without_its_server_ends_with_the_command_that_uploads_it(tracking_server, tmp_path,
                                                                                     isbi_dir):
    """No server at the start nor at the end: the training finishes with its folder complete, the last line names
    ``emseg runs sync RUN_DIR``; that command then uploads the run once (a second time adds nothing) and registers
    the promoted model."""
    from emseg.engine.offline import LONGEST_WAIT

    project = copy_bundles(tmp_path / "lab", ["unet"])
    epochs = 3
    tracking_server.stop()
    try:
        training = Training(project, tracking_server.uri, isbi_dir, epochs, "offline")
        output = training.finish()
    finally:
        tracking_server.start()
    assert _waited(output) <= LONGEST_WAIT
    last = output.strip().splitlines()[-1]
    assert f"emseg runs sync {training.run_dir}" in last, output[-3000:]
    record = json.loads((training.run_dir / "run.json").read_text())
    assert record["status"] == "FINISHED" and record["mlflow_pending"] and not record.get("mlflow_run_id")
    assert {"checkpoint_last.pt", "model_best.pt", "metrics.csv", "config.json"} <= {
        p.name for p in training.run_dir.iterdir()}
    sidecar = json.loads((project / "bundles" / "unet" / "models" / "model.json").read_text())
    assert sidecar["run_name"] == "offline" and not sidecar.get("model_version")

    sync = [sys.executable, "-m", "emseg.cli", "runs", "sync", str(training.run_dir)]
    first = subprocess.run(sync, capture_output=True, text=True, timeout=300, cwd=project)
    assert first.returncode == 0 and "metrics" in first.stdout, first.stdout + first.stderr
    _complete_in_mlflow(tracking_server.uri, training.run_dir, epochs)
    sidecar = json.loads((project / "bundles" / "unet" / "models" / "model.json").read_text())
    assert sidecar["model_version"]
    second = subprocess.run(sync, capture_output=True, text=True, timeout=300, cwd=project)
    assert second.returncode == 0 and "nothing to upload" in second.stdout, second.stdout + second.stderr
    _complete_in_mlflow(tracking_server.uri, training.run_dir, epochs)


def test_eight_trainings_and_four_evaluations_at_once_against_one_server(tracking_server, tmp_path, isbi_dir,
                                                                           tiny_unet):
    """A lab's busy hour on one server: 8 tiny trainings and 4 evaluations at once. Every run FINISHED, every
    epoch's metrics there exactly once, every promoted model registered once."""
    import mlflow
    from conftest import tiny_unet_copy

    uri = tracking_server.uri
    project = tiny_unet_copy(tiny_unet, tmp_path / "lab")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    client = mlflow.MlflowClient(uri)
    versions_before = {v.version for v in client.search_model_versions("name='emseg-unet'")}
    epochs, names = 2, [f"busy-{i}" for i in range(8)]
    jobs = [[sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
             config(project, "unet", "train.json"), "--run_name", name,
             *tiny_training(dataset_dir=isbi_dir, epochs=epochs, epoch_length=2, register_model="True")]
            for name in names]
    jobs += [[sys.executable, "-m", "monai.bundle", "run", "--config_file",
              f"['{config(project, 'unet', 'train.json')}','{config(project, 'unet', 'evaluate.json')}']",
              *overrides(dataset_dir=str(isbi_dir), download="False", amp="False", channels_last="False")]] * 4
    started = time.monotonic()
    processes = [subprocess.Popen(job, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for job in jobs]
    outputs = [process.communicate(timeout=1500)[0] for process in processes]
    seconds = time.monotonic() - started
    assert [p.returncode for p in processes] == [0] * 12, "\n".join(o[-2000:] for o in outputs if "error" in o)

    experiment = client.get_experiment_by_name("emseg-unet")
    runs = {r.info.run_name: r for r in client.search_runs(experiment.experiment_id, max_results=1000)}
    went_offline = 0
    for name in names:
        record = json.loads((project / "bundles" / "unet" / "runs" / name / "run.json").read_text())
        went_offline += "mlflow_synced" in record
        run = runs[name]
        assert run.info.status == "FINISHED" and record["mlflow_run_id"] == run.info.run_id
        assert not record.get("mlflow_pending")
        for key in ("train_loss", "val_v_rand", "val_mean_dice"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2], (name, key)
        for key in run.data.metrics:
            history = [(m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)]
            assert len(history) == len(set(history)), (name, key, history)
    evaluations = [r for r in runs.values() if r.info.run_name.startswith("unet-evaluate")]
    assert len(evaluations) == 4
    for run in evaluations:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "test_v_rand")) == 1
    new = [v for v in client.search_model_versions("name='emseg-unet'") if v.version not in versions_before]
    assert sorted(v.run_id for v in new) == sorted(runs[name].info.run_id for name in names)
    print(f"12 jobs in {seconds:.0f} s; {went_offline} of 8 trainings went offline and caught up")
