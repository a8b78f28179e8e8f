"""MLflow tracking: unique run names, FINISHED on success, FAILED when the engine raises, what made a run."""

from __future__ import annotations

import mlflow
import pytest
from ignite.engine import Engine, Events

from emseg.engine.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MLflowTracker,
    default_tracking_uri,
    run_page,
    source_tags,
    unique_run_name,
)


def _run(tmp_path, step, name):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    engine = Engine(step)
    MLflowTracker(tracking_uri=uri, experiment_name="exp", run_name=name, experiment_param={"lr": 0.1},
                  output_transform=lambda out: out, close_on_complete=True).attach(engine)
    return uri, engine


def _status(uri, name):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("exp")
    (run,) = [r for r in client.search_runs(experiment.experiment_id) if r.info.run_name == name]
    return run, experiment


def test_successful_run_is_finished_with_params_and_metrics(tmp_path):
    uri, engine = _run(tmp_path, lambda e, b: 0.5, "ok")
    engine.run([0, 1], max_epochs=1)
    run, experiment = _status(uri, "ok")
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.1" and run.data.metrics["Loss"] == 0.5
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_raising_run_is_failed(tmp_path):
    def step(engine, batch):
        raise RuntimeError("boom")

    uri, engine = _run(tmp_path, step, "bad")
    with pytest.raises(RuntimeError, match="boom"):
        engine.run([0], max_epochs=1)
    assert _status(uri, "bad")[0].info.status == "FAILED"


def test_an_evaluation_of_weights_trained_elsewhere_finishes_without_a_parent(tmp_path, caplog):
    """A bundle copied to another lab carries its training run's MLflow id; that run is not in the new store. The
    evaluation's run finishes with its scores, names the missing run in a warning and links to no parent."""
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    missing = "0" * 32
    engine = Engine(lambda e, b: 0.5)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(dice=0.9))  # for the parent
    MLflowTracker(tracking_uri=uri, experiment_name="exp", run_name="elsewhere", parent_run_id=missing,
                  parent_prefix="test_", output_transform=lambda out: out, close_on_complete=True).attach(engine)
    with caplog.at_level("WARNING", logger="emseg.engine.tracking"):
        engine.run([0, 1], max_epochs=1)
    run, _ = _status(uri, "elsewhere")
    assert run.info.status == "FINISHED" and run.data.metrics["Loss"] == 0.5
    assert "mlflow.parentRunId" not in run.data.tags
    assert f"the training run {missing} is not in the MLflow store" in caplog.text


def test_unique_run_names_and_env_override(tmp_path, monkeypatch):
    assert len({unique_run_name("unet") for _ in range(20)}) == 20
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert default_tracking_uri(tmp_path) == "sqlite:////elsewhere/x.db"


def test_sigterm_ends_the_run_killed(tmp_path):
    import os
    import signal

    def step(engine, batch):
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        uri, engine = _run(tmp_path, step, "stopped")
        with pytest.raises(KeyboardInterrupt):
            engine.run([0], max_epochs=1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _status(uri, "stopped")[0].info.status == "KILLED"


@pytest.mark.parametrize("fails", [False, True])
def test_every_iteration_metric_is_logged_with_its_step_in_batches(tmp_path, monkeypatch, fails):
    """Per-iteration losses wait for a batch, but none is lost: not at an epoch's end, nor when the run fails."""
    def step(engine, batch):
        if fails and engine.state.iteration == 250:
            raise RuntimeError("boom")
        return float(engine.state.iteration)

    uri, engine = _run(tmp_path, step, "many")
    writes = []
    original = mlflow.MlflowClient.log_batch
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch",
                        lambda self, *a, **k: writes.append(len(k.get("metrics", []))) or original(self, *a, **k))
    if fails:
        with pytest.raises(RuntimeError, match="boom"):
            engine.run(list(range(130)), max_epochs=2)
    else:
        engine.run(list(range(130)), max_epochs=2)
    history = mlflow.MlflowClient(uri).get_metric_history(_status(uri, "many")[0].info.run_id, "Loss")
    logged = 249 if fails else 260
    assert sorted((m.step, m.value) for m in history) == [(i, float(i)) for i in range(1, logged + 1)]
    assert sum(1 for n in writes if n > 1) <= 5 and len([n for n in writes if n]) < logged // 20


def test_source_tags_name_the_commit_and_whether_files_differ(tmp_path):
    import json
    import subprocess

    bundle = tmp_path / "bundles" / "unet"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2.3"}))
    assert "mlflow.source.git.commit" not in source_tags(tmp_path, bundle)  # not a git work tree: no commit
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    tags = source_tags(tmp_path, bundle)
    assert tags["mlflow.source.git.commit"] == head and tags["emseg.git_dirty"] == "false"
    assert tags["emseg.bundle_version"] == "1.2.3" and tags["emseg.version"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2.4"}))
    assert source_tags(tmp_path, bundle)["emseg.git_dirty"] == "true"


def test_run_page_opens_the_model_training_view():
    """MLflow 3's UI reads its view from the workflowType URL parameter (its default is the GenAI view)."""
    assert run_page("3", "abc") == "#/experiments/3/runs/abc?workflowType=machine_learning"
    assert run_page("3") == "#/experiments/3?workflowType=machine_learning"


def test_mlflow_store_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    """MLflow's fluent API writes the store into MLFLOW_TRACKING_URI, which MONAI's handler prefers to its own
    argument: a block that borrows a store must put everything back (this once sent runs to the wrong store)."""
    import os

    from emseg.engine.registry import mlflow_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/other.db"
    experiment = mlflow.MlflowClient(uri).create_experiment("borrowed")
    with mlflow_store(uri, experiment):
        assert os.environ["MLFLOW_TRACKING_URI"] == uri and mlflow.get_tracking_uri() == uri
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_EXPERIMENT_ID" not in os.environ
    assert mlflow.get_tracking_uri() == before
