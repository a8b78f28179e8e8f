"""The MLflow model registry: a promoted model becomes a new version of ``emseg-<bundle>``.

:func:`register_model` logs the network with its best weights to the training run (``mlflow.pytorch``, with a
signature and an input example) and registers it, so the registry says which run made each version and what it
scored. The logged model takes a float32 (N, 1, H, W) batch of slices normalised as the bundle normalises them
(zero mean, unit deviation per slice) and returns one logit per class, (N, C, H, W): softmax over C gives the
bundle's probabilities. Loading it needs emseg installed (the network classes are emseg's or MONAI's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from emseg.engine.trained import open_model
from emseg.networks import final_output

logger = logging.getLogger(__name__)

EXAMPLE_SIZE = 64  # the input example's height and width: a multiple of every bundle network's divisor (32)


def registered_name(bundle_name: str) -> str:
    """The registered model of a bundle: ``emseg-<bundle>``."""
    return f"emseg-{bundle_name}"


def emseg_version() -> str:
    """The installed emseg's version (``unknown`` when it runs from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emseg")
    except PackageNotFoundError:
        return "unknown"


def network_from_record(record: Mapping, weights: str | Path) -> torch.nn.Module:
    """The network saved in a run ``record`` (its resolved ``network_def``) with ``weights`` loaded, in eval mode."""

    if not record.get("network"):
        raise ValueError(f"{weights}: no network definition saved with these weights; cannot register them")
    model = open_model(weights)
    model.record = {**model.record, **dict(record)}  # the run's record describes these weights
    return model.build()


def _signature(network: torch.nn.Module) -> tuple:
    from mlflow.models.signature import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = np.random.default_rng(0).standard_normal((1, 1, EXAMPLE_SIZE, EXAMPLE_SIZE)).astype(np.float32)
    with torch.inference_mode():
        output = final_output(network(torch.from_numpy(example)))
    classes = int(output.shape[1])
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes, -1, -1))]))
    return signature, example


@contextlib.contextmanager
def mlflow_store(tracking_uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's fluent API (``log_model``, ``load_model``) on ``tracking_uri`` (and ``experiment_id``) inside the
    block only. MLflow keeps both as process state and in ``MLFLOW_TRACKING_URI``/``MLFLOW_EXPERIMENT_ID``, which
    MONAI's handler and child processes read: all of it is put back afterwards."""
    import mlflow
    import mlflow.tracking.fluent as fluent

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    environment = {key: os.environ.get(key) for key in keys}
    previous_uri, previous_experiment = mlflow.get_tracking_uri(), getattr(fluent, "_active_experiment_id", None)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        if experiment_id is not None:
            mlflow.set_experiment(experiment_id=experiment_id)
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri)
        fluent._active_experiment_id = previous_experiment
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def register_model(record: Mapping, weights: str | Path, bundle_name: str) -> dict:
    """Log ``weights`` (the best model of the run described by ``record``) to its MLflow run and register it as a
    new version of ``emseg-<bundle_name>``; returns ``registered_model``, ``model_version`` and ``model_uri``."""
    import mlflow
    import mlflow.pytorch

    tracking_uri, run_id = record.get("tracking_uri"), record.get("mlflow_run_id")
    if not tracking_uri or not run_id:
        raise ValueError(f"{weights}: the run has no MLflow run to register the model in")
    network = network_from_record(record, weights).float()
    signature, example = _signature(network)
    best = dict(record.get("best") or {})
    tags = {"emseg.run_name": str(record.get("run_name")), "emseg.metric": str(best.get("metric")),
            "emseg.value": str(best.get("value")), "emseg.epoch": str(best.get("epoch")),
            "emseg.selection": str(best.get("selection", "best")),
            "emseg.weights_sha256": str(record.get("weights_sha256", "")),
            # what init_from needs to rebuild the network and map its classes (emseg.engine.trained)
            "emseg.network": json.dumps(record.get("network")), "emseg.class_names": json.dumps(record.get("class_names")),
            "emseg.dataset": str(record.get("dataset")),
            "emseg.parent_sha256": str((record.get("parent") or {}).get("sha256", ""))}
    name = registered_name(bundle_name)
    client = mlflow.MlflowClient(tracking_uri)
    # the logged model's artifacts go to the run's experiment (MLflow 3 puts them in the active one)
    with mlflow_store(tracking_uri, client.get_run(run_id).info.experiment_id):
        # pickle, not MLflow's default torch.export ("pt2"): that takes seconds and fixes the example's shape
        info = mlflow.pytorch.log_model(network, name="model", run_id=run_id, signature=signature,
                                        input_example=example, registered_model_name=name, tags=tags,
                                        serialization_format="pickle",
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "monai",
                                                          f"emseg=={emseg_version()}"])
        version = str(info.registered_model_version)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        client.update_model_version(name, version, description=(
            f"best model of run {record.get('run_name')}: {best.get('metric')} {best.get('value')} at epoch "
            f"{best.get('epoch')}; input (N, 1, H, W) normalised per slice, output logits (N, C, H, W)"))
    logger.info("registered %s version %s (model %s)", name, version, info.model_uri)
    return {"registered_model": name, "model_version": version, "model_uri": info.model_uri}
