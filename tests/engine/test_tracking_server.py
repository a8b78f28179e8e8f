"""A tracking server a lab shares: PostgreSQL behind ``mlflow server`` with a shared artifact root, on 127.0.0.1;
two tiny trainings at once log to it through ``MLFLOW_TRACKING_URI=http://...`` and both runs, their artifacts and
their registered model versions arrive."""

from __future__ import annotations

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
from conftest import config, copy_bundles, overrides

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


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL store, artifacts proxied into a shared folder."""
    artifacts = tmp_path_factory.mktemp("shared-artifacts")
    port = _free_port()
    log = open(artifacts.parent / "mlflow-server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
                               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "2"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (artifacts.parent / "mlflow-server.log").read_text()
            time.sleep(1)
        yield uri, artifacts
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


def test_two_trainings_at_once_against_a_shared_server(tracking_server, tmp_path, isbi_dir):
    import mlflow

    uri, artifacts = tracking_server
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
    import json

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
