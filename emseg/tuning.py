"""Tune the instance segmentation's parameters on validation slices with Optuna, against the challenge's scores.

The search space is :class:`~emseg.segmentation.instances.InstanceParams`' per-slice parameters (seeds, threshold,
h, sigma, min_size, lines). The first trials are the probability-guided watershed from the interior's
components with lines at thresholds 0.1..0.9 (the nearest instance parameters to the challenge's thinning), so
the search starts from the best of those. Every trial's score is the mean over the slices of
:func:`~emseg.evaluation.scores.instance_scores` (the challenge's formula on the cells as they are). What the
probability map itself scores by the challenge's procedure (Fiji's thinning, best threshold) on the same slices,
:func:`challenge_baseline`, is reported and logged beside the best trial: the cells are worth keeping where they
beat it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emseg.bundle.render import RECIPE, read_recipe, render_bundle
from emseg.engine.paths import load_config
from emseg.engine.runs import weights_record
from emseg.engine.tracking import prepare_store, unique_run_name
from emseg.engine.trained import open_model
from emseg.evaluation.challenge import SCORE_NAMES, best_threshold, challenge_scores
from emseg.evaluation.scores import instance_scores
from emseg.io.files import write_text_atomically
from emseg.networks import final_output
from emseg.segmentation.instances import SEEDS, InstanceParams, segment_slice

logger = logging.getLogger(__name__)

SCORES = ("v_rand", "v_info")
BASELINE_THRESHOLDS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.1, 0.9)


def _suggest(trial, base: InstanceParams) -> InstanceParams:
    seeds = trial.suggest_categorical("seeds", list(SEEDS))
    values = {
        "seeds": seeds,
        "threshold": trial.suggest_float("threshold", 0.05, 0.95),
        "sigma": trial.suggest_float("sigma", 0.0, 2.0),
        "min_size": trial.suggest_int("min_size", 0, 400),
        "lines": trial.suggest_categorical("lines", [False, True]),
    }
    if seeds == "distance":
        values["h"] = trial.suggest_float("h", 0.5, 10.0)
    return InstanceParams(**{**base.as_dict(), **values})


def mean_score(interior: Sequence[np.ndarray], truth: Sequence[np.ndarray], params: InstanceParams,
               score: str = "v_rand") -> float:
    """Mean over slices of ``score`` of the instances :func:`segment_slice` makes with ``params``."""

    return float(np.mean([instance_scores(segment_slice(p, params), t)[score] for p, t in zip(interior, truth)]))


def tune_instances(interior: Sequence[np.ndarray], truth: Sequence[np.ndarray], trials: int = 60,
                   score: str = "v_rand", seed: int = 0, base: InstanceParams | None = None):
    """An Optuna study maximising ``score`` (``v_rand`` or ``v_info``) of the instances of ``interior``
    probabilities against binary ``truth`` slices; its ``best_params`` merged into ``base`` give the parameters
    (:func:`best_instance_params`). ``base`` keeps what is not tuned (``mode``, ``link_iou``)."""
    import optuna

    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if not len(interior) or len(interior) != len(truth):
        raise ValueError(f"{len(interior)} probability slices for {len(truth)} ground-truth slices")
    base = base or InstanceParams()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                study_name=f"instances-{score}")
    for threshold in BASELINE_THRESHOLDS[:trials]:
        study.enqueue_trial({"seeds": "components", "threshold": threshold, "sigma": 0.0, "min_size": 0,
                             "lines": True})

    def objective(trial) -> float:
        value = mean_score(interior, truth, _suggest(trial, base), score)
        logger.info("trial %d/%d: %s %.4f with %s", trial.number + 1, trials, score, value, trial.params)
        return value

    study.optimize(objective, n_trials=trials)
    return study


def best_instance_params(study, base: InstanceParams | None = None) -> InstanceParams:
    """The parameters of a :func:`tune_instances` study's best trial."""
    params = dict(study.best_params)
    if params.get("seeds") != "distance":
        params.pop("h", None)
    return InstanceParams(**{**(base or InstanceParams()).as_dict(), **params})


def validation_probabilities(bundle_dir: str | Path, run_name: str | None = None, split: str = "validation",
                             overrides: dict | None = None) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Cell-interior probabilities of a bundle's ``split`` slices (of the data split the weights were trained with),
    predicted with its weights (the promoted model, or ``run_name``'s best) and its validation inferer, the binary
    ground truth of those slices, and what made them (checkpoint, its sha256, the training run, the config values
    used for logging). ``overrides``: further config values (``dataset_dir``, say)."""
    import torch


    configs = Path(bundle_dir) / "configs"
    values = {"eval_split": split, "run_name": run_name, **(overrides or {})}
    parser = load_config([configs / "train.json", configs / "evaluate.json"], values)
    record = weights_record(parser.get_parsed_content("ckpt_path"))
    if "split" in record and "split" not in values:  # the validation slices of the training, not the default's
        values["split"] = record["split"]
        parser = load_config([configs / "train.json", configs / "evaluate.json"], values)
    interior_class = parser.get_parsed_content("interior_class")
    if interior_class is None:
        raise ValueError(f"{bundle_dir}: instances are made from cell-interior probabilities; this bundle's data "
                         f"set ({parser.get_parsed_content('dataset')}) has no membrane/interior classes")
    checkpoint, device = parser.get_parsed_content("ckpt_path"), parser.get_parsed_content("device")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: no weights to tune for; train the bundle (and promote a run) first, "
                                f"or give --run-name")
    model = open_model(checkpoint)  # read once: the digest below names exactly the weights that scored
    network = model.load_into(parser.get_parsed_content("network")).to(device)
    inferer = parser.get_parsed_content("validate#inferer")
    interior, truth = [], []
    with torch.inference_mode():
        for batch in parser.get_parsed_content("validate#dataloader"):
            logits = final_output(inferer(batch["image"].to(device), network))
            interior.append(torch.softmax(logits.float(), 1)[0, interior_class].cpu().numpy())
            truth.append((np.asarray(batch["label"][0, 0]) == interior_class).astype(np.uint8))
    info = {"bundle": parser.get_parsed_content("bundle_name"), "split": split, "slices": len(truth),
            "checkpoint": str(checkpoint), "checkpoint_sha256": model.sha256,
            "training_run": model.record.get("run_name"), "training_mlflow_run_id": model.record.get("mlflow_run_id"),
            "tracking_uri": parser.get_parsed_content("tracking_uri"),
            "experiment_name": parser.get_parsed_content("experiment_name")}
    return interior, truth, info


def log_study(study, params: InstanceParams, info: dict, score: str, baseline: float) -> str:
    """Log a tuning study as one MLflow run in the bundle's experiment, a child of the training run that made the
    weights: the best parameters, the best score and the probability map's challenge score
    (:func:`challenge_baseline`), every trial's score by trial number, and the trials as a CSV artifact. Returns
    the run id."""
    import tempfile

    import mlflow


    prepare_store(info["tracking_uri"])
    client = mlflow.MlflowClient(info["tracking_uri"])
    experiment = client.get_experiment_by_name(info["experiment_name"])
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(info["experiment_name"])
    tags = {"emseg.kind": "tune-postprocess", "emseg.checkpoint_sha256": info["checkpoint_sha256"]}
    if info.get("training_mlflow_run_id"):
        tags["mlflow.parentRunId"] = info["training_mlflow_run_id"]
    run = client.create_run(experiment_id, run_name=unique_run_name(f"{info['bundle']}-tune-postprocess"), tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
        **{f"instances.{k}": v for k, v in params.as_dict().items()}, "score": score, "trials": len(study.trials),
        "split": info["split"], "slices": info["slices"], "checkpoint": info["checkpoint"],
        "training_run": info.get("training_run")}.items()])
    client.log_metric(run_id, f"best_{score}", study.best_value)
    client.log_metric(run_id, f"challenge_{score}", baseline)
    for trial in study.trials:
        if trial.value is not None:
            client.log_metric(run_id, f"trial_{score}", trial.value, step=trial.number)
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / "trials.csv"
        study.trials_dataframe().to_csv(table, index=False)
        client.log_artifact(run_id, str(table))
    client.set_terminated(run_id)
    return run_id


def challenge_baseline(interior: Sequence[np.ndarray], truth: Sequence[np.ndarray], score: str = "v_rand") -> float:
    """The challenge's ``score`` of the probability map on these slices: Fiji's thinning, the mean over slices at
    the best of the challenge's thresholds."""

    per_slice = [challenge_scores(p, t)[:, SCORE_NAMES.index(score)] for p, t in zip(interior, truth)]
    return best_threshold(np.stack(per_slice))[0]


def save_to_bundle(bundle_dir: str | Path, params: InstanceParams) -> list[Path]:
    """Make ``params`` the bundle's ``instances`` (its recipe.json, then its configs rendered again); returns the
    files changed."""
    import json


    recipe = read_recipe(bundle_dir)
    recipe["instances"] = params.as_dict()
    path = Path(bundle_dir) / RECIPE
    write_text_atomically(path, json.dumps(recipe, indent=4) + "\n")
    return [path, *render_bundle(bundle_dir)]
