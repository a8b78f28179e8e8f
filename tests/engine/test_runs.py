"""Runs own their results, through the real bundle CLI on real ISBI data with tiny settings: resume after kill -9
and after SIGTERM, a NaN run that fails without touching the promoted model, two trainings at once on a fresh
MLflow store; and the run bookkeeping (promotion, stale runs, the saved network) on its own."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import config, copy_bundles, monai_bundle, overrides
from ignite.engine import Events

from emseg.engine.runs import (
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    RunError,
    RunFolder,
    mark_stale_runs,
    network_for,
    promote,
    weights_path,
)
from emseg.engine.tracking import unique_run_name

FEATURES = [8, 8, 16, 32, 64, 8]


def tiny(isbi_dir: Path, **values) -> list[str]:
    settings = {"epoch_length": "2", "val_interval": "1", "batch_size": "2", "crops_per_slice": "2",
                "patch_size": "[64,64]", "features": json.dumps(FEATURES), "download": "False",
                "dataset_dir": str(isbi_dir), "checkpoint_interval": "0", "register_model": "False", **values}
    return overrides(**{k: str(v) for k, v in settings.items()})


def start(project: Path, cwd: Path, args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                             config(project, "unet", "train.json"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_epochs(folder: RunFolder, epochs: int, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while folder.record().get("epochs_done", 0) < epochs:
        if process.poll() is not None:
            pytest.fail(f"training ended early:\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no epoch {epochs} within {timeout} s")
        time.sleep(0.2)


def epochs_in_metrics(folder: RunFolder) -> list[int]:
    lines = folder.file("metrics.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def mlflow_run(project: Path, name: str):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project}/mlruns.db")
    runs = client.search_runs(client.get_experiment_by_name("emseg-unet").experiment_id,
                              filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, f"{len(runs)} MLflow runs named {name}"
    return client, runs[0]


def interrupted(project: Path, cwd: Path, isbi_dir: Path, name: str, epochs: int, after: int,
                signum: int, **values) -> tuple[RunFolder, subprocess.Popen, str]:
    """Start a training run ``name`` of ``epochs`` epochs, send ``signum`` once ``after`` epochs are done."""
    folder = RunFolder(project / "bundles" / "unet" / "runs" / name)
    process = start(project, cwd, [*tiny(isbi_dir, epochs=epochs, **values), "--run_name", name])
    wait_for_epochs(folder, after, process)
    process.send_signal(signum)
    return folder, process, process.communicate(timeout=120)[0]


def resume(project: Path, cwd: Path, isbi_dir: Path, name: str, epochs: int, **values) -> None:
    monai_bundle("run", "training", "--config_file", config(project, "unet", "train.json"),
                 *tiny(isbi_dir, epochs=epochs, **values), "--run_name", name, cwd=cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_bundles(tmp_path_factory.mktemp("project"), ["unet"])


@pytest.fixture(scope="module")
def cwd(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cwd")


@pytest.mark.slow
def test_resume_after_kill_9_repeats_at_most_one_epoch(project, cwd, isbi_dir):
    """Also: with selection "last" the run ships the weight average after the last epoch (whatever the earlier
    validations scored), and the resumed average goes on from the checkpoint's."""
    folder, _, _ = interrupted(project, cwd, isbi_dir, "killed", epochs=6, after=2, signum=signal.SIGKILL,
                               model_selection="last")
    done, chosen = folder.record()["epochs_done"], folder.record()["settings"]
    assert folder.record()["status"] == RUNNING  # nobody could record the end
    resume(project, cwd, isbi_dir, "killed", epochs=6, model_selection="last")
    record = folder.record()
    assert record["status"] == FINISHED and record["epochs_done"] == 6
    # the resumed run computes as it began: the precision and layout it recorded, not a new measurement
    assert record["settings"] == {**chosen, "source": "recorded"} and chosen["source"] in ("measured", "cached")
    assert record["resumed"][0]["epoch"] >= done - 1 >= 1
    epochs = epochs_in_metrics(folder)
    assert sorted(set(epochs)) == [1, 2, 3, 4, 5, 6] and len(epochs) - 6 <= 1
    client, run = mlflow_run(project, "killed")
    assert run.info.status == "FINISHED" and run.info.run_id == record["mlflow_run_id"]
    assert {m.step for m in client.get_metric_history(run.info.run_id, "train_loss")} == {1, 2, 3, 4, 5, 6}
    sidecar = json.loads((project / "bundles" / "unet" / "models" / "model.json").read_text())
    assert sidecar["run_name"] == "killed" and sidecar["network"]["features"] == FEATURES
    assert "model_version" not in sidecar and not client.search_registered_models()  # --register_model False
    assert record["best"]["epoch"] == sidecar["epoch"] == 6 and record["best"]["selection"] == sidecar["selection"] \
        == "last"
    last = torch.load(folder.file("checkpoint_last.pt"), weights_only=True)
    best = torch.load(folder.file("model_best.pt"), weights_only=True)
    average = {k.removeprefix("module."): v for k, v in last["weight_average"].items() if k != "n_averaged"}
    assert int(last["weight_average"]["n_averaged"]) == 12  # 6 epochs x 2 iterations, across the kill
    assert best.keys() == last["model"].keys() == average.keys()
    assert all(torch.equal(best[k], average[k]) for k in best)  # validated and saved: the average
    assert not all(torch.equal(best[k], last["model"][k]) for k in best)  # not the last step's weights
    promoted = project / "bundles" / "unet" / "models" / "model.pt"
    assert promoted.read_bytes() == folder.file("model_best.pt").read_bytes()
    assert json.loads(folder.file("config.json").read_text())["weight_average_epochs"] == 5


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint_and_the_run_resumes(project, cwd, isbi_dir):
    folder, process, output = interrupted(project, cwd, isbi_dir, "stopped", epochs=4, after=1,
                                          signum=signal.SIGTERM)
    assert process.returncode != 0
    assert folder.record()["status"] == KILLED
    checkpoint = torch.load(folder.file("checkpoint_last.pt"), weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch"} <= set(checkpoint) and checkpoint["epoch"] >= 1
    from monai.networks.nets import BasicUNet

    BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=FEATURES, norm="batch").load_state_dict(
        checkpoint["model"])
    _, run = mlflow_run(project, "stopped")
    assert run.info.status == "KILLED", output[-2000:]
    resume(project, cwd, isbi_dir, "stopped", epochs=4)
    assert folder.record()["status"] == FINISHED and mlflow_run(project, "stopped")[1].info.status == "FINISHED"


@pytest.mark.slow
def test_nan_loss_fails_the_run_and_keeps_the_promoted_model(project, cwd, isbi_dir):
    models = project / "bundles" / "unet" / "models"
    if not (models / "model.pt").is_file():
        monai_bundle("run", "training", "--config_file", config(project, "unet", "train.json"),
                     *tiny(isbi_dir, epochs=1), cwd=cwd)
    before = {name: (models / name).read_bytes() for name in ("model.pt", "model.json")}
    result = monai_bundle("run", "training", "--config_file", config(project, "unet", "train.json"),
                          *tiny(isbi_dir, epochs=3, learning_rate="1e30", val_start_epoch=1), "--run_name", "nan",
                          cwd=cwd, check=False)
    assert result.returncode != 0
    assert "training loss is nan" in result.stdout + result.stderr
    folder = RunFolder(project / "bundles" / "unet" / "runs" / "nan")
    assert folder.record()["status"] == "FAILED" and "NonFiniteLossError" in folder.record()["reason"]
    assert not folder.file("model_best.pt").exists() and not folder.file("checkpoint_last.pt").exists()
    assert {name: (models / name).read_bytes() for name in before} == before
    assert mlflow_run(project, "nan")[1].info.status == "FAILED"


@pytest.mark.slow
def test_two_trainings_at_once_on_a_fresh_store(tmp_path, isbi_dir):
    import mlflow

    project = copy_bundles(tmp_path / "project", ["unet"])
    processes = {name: start(project, tmp_path, [*tiny(isbi_dir, epochs=2, seed=seed, register_model=True),
                                                 "--run_name", name])
                 for seed, name in enumerate(["seed0", "seed1"])}
    for name, process in processes.items():
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output[-3000:]
    weights = {}
    for name in processes:
        client, run = mlflow_run(project, name)
        assert run.info.status == "FINISHED"
        artifact = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model_best.pt",
                                                       tracking_uri=client.tracking_uri, dst_path=str(tmp_path / name))
        own = project / "bundles" / "unet" / "runs" / name / "model_best.pt"
        assert Path(artifact).read_bytes() == own.read_bytes()  # each run's artifact is its own weights
        weights[name] = torch.load(own, weights_only=True)
    assert not all(torch.equal(weights["seed0"][k], weights["seed1"][k]) for k in weights["seed0"])
    versions = client.search_model_versions("name='emseg-unet'")  # both promotions registered, on one SQLite store
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {mlflow_run(project, name)[1].info.run_id for name in processes}


def test_a_run_promoted_elsewhere_registers_under_its_bundle(tmp_path, monkeypatch):
    """A comparison promotes into bundles/unet/runs/compare/NAME/: the registered model is still emseg-unet."""
    import emseg.engine.runs

    names = []
    monkeypatch.setattr(emseg.engine.runs, "register_model",
                        lambda record, weights, bundle: names.append(bundle) or {"model_version": "1"})
    run = RunFolder(tmp_path / "runs" / "r")
    run.update(status=FINISHED, best={"metric": "val_v_rand", "value": 0.9, "epoch": 2}, bundle="unet",
               mlflow_run_id="abc", tracking_uri="sqlite:///x.db")
    torch.save({"w": torch.ones(2)}, run.file("model_best.pt"))
    promote(run.path, tmp_path / "runs" / "compare" / "unet-dice_ce-e100-s0")
    assert names == ["unet"]


def test_promotion_needs_a_finished_run_with_a_finite_score(tmp_path):
    run = RunFolder(tmp_path / "runs" / "r")
    run.update(status=RUNNING, best={"metric": "val_v_rand", "value": 0.9, "epoch": 2})
    torch.save({"w": torch.ones(2)}, run.file("model_best.pt"))
    with pytest.raises(RunError, match="run r is RUNNING, only a finished run is promoted"):
        promote(run.path, tmp_path / "models")
    run.update(status=FINISHED, best={"metric": "val_v_rand", "value": float("nan"), "epoch": 2})
    with pytest.raises(RunError, match="no best model with a finite validation score"):
        promote(run.path, tmp_path / "models")
    assert not (tmp_path / "models" / "model.pt").exists()
    run.update(best={"metric": "val_v_rand", "value": 0.9, "epoch": 2}, network={"_target_": "torch.nn.Identity"})
    target = promote(run.path, tmp_path / "models")
    sidecar = json.loads(target.with_name("model.json").read_text())
    assert target.read_bytes() == run.file("model_best.pt").read_bytes()
    assert sidecar["run_name"] == "r" and sidecar["value"] == 0.9 and len(sidecar["weights_sha256"]) == 64
    with pytest.raises(RunError, match="runs/nope: no such run; runs of this bundle: r"):
        promote(tmp_path / "runs" / "nope", tmp_path / "models")


def test_a_running_run_whose_process_is_gone_is_marked_killed(tmp_path):
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead, alive = RunFolder(tmp_path / "dead"), RunFolder(tmp_path / "alive")
    dead.update(status=RUNNING, pid=gone.pid, host=socket.gethostname())
    alive.update(status=RUNNING, pid=os.getpid(), host=socket.gethostname())
    assert mark_stale_runs(tmp_path) == ["dead"]
    assert dead.record()["status"] == KILLED and alive.record()["status"] == RUNNING


def test_the_network_saved_with_the_weights_is_used_unless_asked_otherwise(tmp_path):
    from monai.networks.nets import BasicUNet

    bundle = tmp_path / "bundle"
    run = RunFolder(bundle / "runs" / "r")
    trained = {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
               "features": FEATURES, "norm": "batch"}
    run.update(status=FINISHED, network=trained)
    config_network = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, norm="batch")  # default widths
    weights = weights_path(bundle, "r")
    assert weights == str(run.file("model_best.pt"))
    built = network_for(weights, config_network)
    assert built.conv_0.conv_0.conv.out_channels == 8
    assert network_for(weights, config_network, "config") is config_network
    with pytest.raises(RunError, match="runs/other: no such run; runs of this bundle: r"):
        weights_path(bundle, "other")


def test_run_names_are_unique():
    names = {unique_run_name("unet") for _ in range(1000)}
    assert len(names) == 1000 and all(len(n.rsplit("-", 1)[1]) == 8 for n in names)


def test_pruning_depth_comes_from_the_config_and_widths_from_the_weights(tmp_path):
    from emseg.networks import UNetPlusPlus

    run = RunFolder(tmp_path / "runs" / "r")
    run.update(network={"_target_": "emseg.networks.UNetPlusPlus", "spatial_dims": 2, "in_channels": 1,
                        "out_channels": 2, "features": FEATURES, "deep_supervision": True, "inference_depth": 4})
    config_network = UNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=2, inference_depth=2)  # default widths
    built = network_for(weights_path(tmp_path, "r"), config_network)
    assert built.inference_depth == 2 and built.state_dict()["conv_0_0.conv_0.conv.weight"].shape[0] == 8


@pytest.mark.slow
def test_a_run_that_another_process_runs_is_refused_and_left_alone(project, cwd, isbi_dir):
    import socket

    folder = RunFolder(project / "bundles" / "unet" / "runs" / "busy")
    folder.update(status=RUNNING, pid=os.getpid(), host=socket.gethostname(), epochs_done=3)  # this test is alive
    before = folder.file("run.json").read_bytes()
    result = monai_bundle("run", "training", "--config_file", config(project, "unet", "train.json"),
                          *tiny(isbi_dir, epochs=2), "--run_name", "busy", cwd=cwd, check=False)
    assert result.returncode == 1
    assert "run busy is running (process" in (result.stdout + result.stderr).strip().splitlines()[-1]
    assert folder.file("run.json").read_bytes() == before


def test_yes_no_settings_given_as_text_are_refused_by_name(tmp_path, isbi_dir):
    """MONAI's CLI passes --register_model false as the text "false", which would count as true."""
    from emseg.data import datalist
    from emseg.engine.runs import TrainingRun
    from emseg.networks import TernausNet11, UNetPlusPlus
    from emseg.segmentation import InstanceParams

    with pytest.raises(ValueError, match="register_model must be True or False, got 'false'"):
        TrainingRun(str(tmp_path / "run"), {"model": torch.nn.Linear(1, 1)}, register_model="false")
    with pytest.raises(ValueError, match="download must be True or False, got 'no'"):
        datalist("isbi2012", isbi_dir, "train", download="no")
    with pytest.raises(ValueError, match="batch_norm must be True or False, got 'false'"):
        TernausNet11(batch_norm="false")
    with pytest.raises(ValueError, match="deep_supervision must be True or False, got 'false'"):
        UNetPlusPlus(deep_supervision="false")
    with pytest.raises(ValueError, match="lines must be True or False, got 'false'"):
        InstanceParams.from_mapping({"lines": "false"})
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_with_the_default_interval_a_kill_9_repeats_at_most_what_the_log_states(project, cwd, isbi_dir):
    """The default checkpoint_interval (300 s, not overridden): the log states the cost of a crash at the start; a
    kill -9 after the first checkpoint repeats at most that much training when the run resumes from it."""
    name = "default-interval"
    folder = RunFolder(project / "bundles" / "unet" / "runs" / name)
    args = tiny(isbi_dir, epochs=100000, val_interval=20, amp="False", channels_last="False")
    at = args.index("--checkpoint_interval")
    del args[at:at + 2]  # the bundle's default
    log = cwd / f"{name}.log"  # a file, not a pipe: minutes of log lines would fill a pipe nobody reads meanwhile
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                                    config(project, "unet", "train.json"), *args, "--run_name", name], cwd=cwd, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 900
    while not folder.file("checkpoint_last.pt").is_file():
        assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    time.sleep(20)  # training goes on past the checkpoint
    saved = folder.file("checkpoint_last.pt").stat().st_mtime
    done = folder.record()["epochs_done"]
    process.kill()
    killed = time.time()
    process.wait(timeout=60)
    output = log.read_text()
    assert "a crash (kill -9, power cut) repeats at most 5 min of training" in output
    checkpoint_epoch = torch.load(folder.file("checkpoint_last.pt"), weights_only=True)["epoch"]
    started = datetime.datetime.fromisoformat(folder.record()["started"]).timestamp()  # training, not imports
    assert saved - started <= 300 + 1 and 1 <= checkpoint_epoch < done  # the first checkpoint: by the interval
    assert killed - saved <= 300  # what the kill cost in time, from the checkpoint the run resumes from
    resume(project, cwd, isbi_dir, name, epochs=done + 1, val_interval=20)
    record = folder.record()
    assert record["status"] == FINISHED and record["resumed"][-1]["epoch"] == checkpoint_epoch
    assert sorted(set(epochs_in_metrics(folder))) == list(range(1, done + 2))


def test_losses_are_read_back_together_and_a_non_finite_one_is_named_by_its_iteration(tmp_path):
    """The loss of each iteration stays on its device until LOSS_READBACK of them (or the epoch's end) are read
    back at once; the first non-finite one fails the run, named by its epoch and iteration."""
    from ignite.engine import Engine

    from emseg.engine.runs import LOSS_READBACK, NonFiniteLossError, TrainingRun

    losses = [1.0] * 100
    losses[44] = float("nan")  # iteration 45, in the second read-back batch
    checked = []
    engine = Engine(lambda e, batch: [{"loss": torch.tensor(losses[e.state.iteration - 1])}])
    run = TrainingRun(str(tmp_path / "run"), {"model": torch.nn.Linear(1, 1)}, checkpoint_interval=0)
    run.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: checked.append(len(run._losses)))

    def reraise(engine, error):  # as the MLflow tracker and StatsHandler after TrainingRun do in a bundle
        raise error

    engine.add_event_handler(Events.EXCEPTION_RAISED, reraise)
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 2, iteration 45;"):
        engine.run(range(40), max_epochs=3)
    # read back at iteration 32, at the end of epoch 1 (33-40), then 41-72: found at 72, not at once
    assert engine.state.iteration == 40 + LOSS_READBACK
    assert max(checked) == LOSS_READBACK - 1 and RunFolder(tmp_path / "run").record()["status"] == FAILED
