"""A trained model as one object: its weights, what was saved with them, where they came from, how to build it.

:func:`open_model` reads any of the forms a model travels in and gives a :class:`TrainedModel`:

| source | example | weights | what was saved with them |
|---|---|---|---|
| a bundle folder | ``bundles/unet`` | its promoted ``models/model.pt`` | ``models/model.json`` |
| a run folder | ``bundles/unet/runs/unet_20261206_0650`` | ``model_best.pt`` | ``run.json`` |
| a weights file | ``model.pt`` | the file | ``model.json``/``run.json`` beside it, if any |
| a packed bundle | ``unet_v0.3.1.zip`` (``emseg bundle pack``) | ``models/model.pt``, checked against ``large_files.json`` | ``models/model.json`` |
| a bioimage.io package | ``unet.bioimageio.zip`` | ``weights.pt``, checked against ``rdf.yaml`` | ``rdf.yaml`` (architecture, classes, ``config.emseg``) |
| a registered MLflow model | ``models:/emseg-unet/3`` | the training run's ``model_best.pt`` artifact, checked against the version's sha256 tag | the version's tags |

Every weights file is read with ``weights_only=True`` (nothing pickled runs) and named by the sha256 of the bytes
read. :func:`initialise_network` starts a bundle's training from a parent model (the bundle key ``init_from``):
tensors are copied by name, the output head's rows are mapped class by class, and a parent of another architecture
is refused with one line naming it. :func:`parent_record` is what a run records about its parent.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from emseg.engine.precision import prepare_network
from emseg.networks.weights import build_network, read_state_dict

logger = logging.getLogger(__name__)

REGISTRY_SCHEME = "models:/"
# what a run folder and a bundle's models/ folder hold (emseg.engine.runs writes them)
RECORD, BEST = "run.json", "model_best.pt"
PROMOTED, SIDECAR = "model.pt", "model.json"
CLASS_KEYS = ("out_channels", "num_classes")  # the key of a saved network definition that counts its classes


class ModelSourceError(ValueError):
    """A model source that cannot be read or does not fit; the message names it and says what to do."""


@dataclass
class TrainedModel:
    """Weights and what is known about them (see the module docstring)."""

    state: dict
    sha256: str
    source: str
    kind: str
    record: dict = field(default_factory=dict)

    @property
    def network_def(self) -> dict | None:
        """The resolved network definition saved with the weights (``_target_`` and keyword arguments)."""
        network = self.record.get("network")
        return dict(network) if network else None

    @property
    def class_names(self) -> list[str] | None:
        names = self.record.get("class_names")
        return [str(n) for n in names] if names else None

    def build(self) -> nn.Module:
        """The network the weights were trained as, with them loaded, in eval mode."""
        if self.network_def is None:
            raise ModelSourceError(f"{self.source}: no network definition was saved with these weights; load them "
                                   f"into a network built from a bundle config instead")
        network = build_network(self.network_def)
        network.load_state_dict(self.state)
        return network.eval()

    def load_into(self, network: nn.Module) -> nn.Module:
        """``network`` (built from a config) with these weights loaded strictly, in eval mode; weights that do not
        fit are refused naming the source."""
        try:
            network.load_state_dict(self.state)
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise ValueError(f"{self.source}: weights do not fit the network ({detail[:300]}); if they were trained "
                             f"elsewhere, set the network's keys (--features ...) and --network_from config") from err
        return network.eval()

    def provenance(self) -> dict:
        """Where the weights come from: what a run started from them records as its parent."""
        keys = ("run_name", "mlflow_run_id", "registered_model", "model_version", "dataset", "class_names", "bundle")
        return {"source": self.source, "kind": self.kind, "sha256": self.sha256,
                **{k: self.record[k] for k in keys if self.record.get(k) is not None},
                **({"parent": self.record["parent"]} if self.record.get("parent") else {})}


# --- reading each kind of source -------------------------------------------------------------------------------
def weights_record(weights: str | Path) -> dict:
    """What was saved with ``weights``: the sidecar of a promoted model, or the run record of a run's best model."""
    weights = Path(weights)
    sidecar = weights.with_name(SIDECAR) if weights.name == PROMOTED else weights.with_name(RECORD)
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def _from_file(path: Path, kind: str, source: str) -> TrainedModel:
    try:
        state, digest = read_state_dict(path)
    except (FileNotFoundError, ValueError) as err:
        raise ModelSourceError(f"init_from {source}: {err}") from err
    record = weights_record(path)
    if record.get("weights_sha256", digest) != digest:
        raise ModelSourceError(f"{path}: the record beside it describes other weights (sha256 "
                               f"{record['weights_sha256'][:12]}...); promote the run again or give the run folder")
    return TrainedModel(state, digest, source, kind, record)


def _from_folder(path: Path, source: str) -> TrainedModel:
    if (path / RECORD).is_file():
        return _from_file(path / BEST, "run", source)
    if (path / "models" / PROMOTED).is_file():
        model = _from_file(path / "models" / PROMOTED, "bundle", source)
        model.record.setdefault("bundle", path.resolve().name)
        return model
    raise ModelSourceError(f"{path}: neither a bundle with a promoted model (models/model.pt) nor a run folder "
                           f"(run.json); train or promote first, or give the weights file")


def _state_from_bytes(data: bytes, name: str) -> dict:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a pickled object, or not a checkpoint: refused either way
        raise ModelSourceError(f"{name}: refused, not a readable weights-only PyTorch file ({type(err).__name__})") \
            from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ModelSourceError(f"{name}: expected a state dict, found {type(state).__name__}")
    return state


def _member(archive: zipfile.ZipFile, names: Sequence[str], suffix: str) -> str | None:
    found = [n for n in names if n == suffix or n.endswith("/" + suffix)]
    return min(found, key=len) if found else None


def _from_packed(path: Path, archive: zipfile.ZipFile, source: str) -> TrainedModel:
    names = archive.namelist()
    weights = _member(archive, names, "models/model.pt")
    if weights is None:
        raise ModelSourceError(f"{path}: a packed bundle without models/model.pt; pack it again (emseg bundle pack)")
    data = archive.read(weights)
    digest = hashlib.sha256(data).hexdigest()
    listed = _member(archive, names, "large_files.json")
    if listed:
        expected = {f["path"]: f.get("hash_val") for f in json.loads(archive.read(listed)).get("large_files", [])}
        if expected.get("models/model.pt") not in (None, digest):
            raise ModelSourceError(f"{path}: models/model.pt does not match its sha256 in large_files.json (the zip "
                                   f"was changed); ask for the bundle again")
    sidecar = _member(archive, names, "models/model.json")
    record = json.loads(archive.read(sidecar)) if sidecar else {}
    meta = _member(archive, names, "configs/metadata.json")
    if meta:
        provenance = json.loads(archive.read(meta)).get("emseg_provenance") or {}
        record.setdefault("run_name", provenance.get("run_name"))
        record.setdefault("mlflow_run_id", provenance.get("mlflow_run_id"))
    record.setdefault("bundle", weights.split("/")[0] if "/" in weights else None)
    return TrainedModel(_state_from_bytes(data, f"{path}:{weights}"), digest, source, "packed", record)


def _from_bioimageio(path: Path, archive: zipfile.ZipFile, rdf_name: str, source: str) -> TrainedModel:
    import yaml

    rdf = yaml.safe_load(archive.read(rdf_name))
    entry = ((rdf.get("weights") or {}).get("pytorch_state_dict") or {})
    if not entry.get("source"):
        raise ModelSourceError(f"{path}: this bioimage.io model has no pytorch_state_dict weights; emseg starts only "
                               f"from those")
    weights = str(entry["source"])
    data = archive.read(weights)
    digest = hashlib.sha256(data).hexdigest()
    expected = entry.get("sha256")
    if expected and expected != digest:
        raise ModelSourceError(f"{path}: {weights} does not match its sha256 in {rdf_name}; the package was changed")
    architecture = entry.get("architecture") or {}
    network = None
    if architecture.get("callable") and architecture.get("import_from"):
        network = {"_target_": f"{architecture['import_from']}.{architecture['callable']}",
                   **(architecture.get("kwargs") or {})}
    axes = (rdf.get("outputs") or [{}])[0].get("axes") or []
    channels = next((a.get("channel_names") for a in axes if a.get("type") == "channel"), None)
    emseg = (rdf.get("config") or {}).get("emseg") or {}
    record = {"network": network, "class_names": channels, "run_name": emseg.get("run_name"),
              "mlflow_run_id": emseg.get("mlflow_run_id"), "dataset": emseg.get("dataset"),
              "bundle": emseg.get("bundle"), "exported_from_sha256": emseg.get("weights_sha256"),
              "parent": emseg.get("parent")}
    return TrainedModel(_state_from_bytes(data, f"{path}:{weights}"), digest, source, "bioimageio", record)


def _from_zip(path: Path, source: str) -> TrainedModel:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            rdf = _member(archive, names, "rdf.yaml") or _member(archive, names, "bioimageio.yaml")
            if rdf:
                return _from_bioimageio(path, archive, rdf, source)
            return _from_packed(path, archive, source)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelSourceError(f"{path}: not a readable packed bundle or bioimage.io package ({err})") from err


def _from_registry(uri: str, tracking_uri: str | None) -> TrainedModel:
    import mlflow

    parts = uri[len(REGISTRY_SCHEME):].strip("/").split("/")
    if len(parts) != 2 or not parts[1].isdigit():
        raise ModelSourceError(f"init_from {uri}: a registered model is named models:/NAME/VERSION, e.g. "
                               f"models:/emseg-unet/3")
    name, version = parts
    client = mlflow.MlflowClient(tracking_uri)
    try:
        found = client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as err:
        raise ModelSourceError(f"init_from {uri}: no such registered model version at {tracking_uri} "
                               f"({str(err).splitlines()[0]})") from err
    tags = dict(found.tags or {})
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(found.run_id, "model_best.pt", tmp)
        except Exception as err:
            raise ModelSourceError(f"init_from {uri}: the weights of run {found.run_id} (model_best.pt) cannot be "
                                   f"downloaded ({type(err).__name__}); give the run folder instead") from err
        data = Path(local).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    expected = tags.get("emseg.weights_sha256")
    if expected and expected != digest:
        raise ModelSourceError(f"init_from {uri}: the run's model_best.pt (sha256 {digest[:12]}...) is not the "
                               f"registered weights ({expected[:12]}...); give the promoted bundle folder instead")
    record = {"registered_model": name, "model_version": str(version), "mlflow_run_id": found.run_id,
              "run_name": tags.get("emseg.run_name"),
              "network": json.loads(tags["emseg.network"]) if tags.get("emseg.network") else None,
              "class_names": json.loads(tags["emseg.class_names"]) if tags.get("emseg.class_names") else None,
              "dataset": tags.get("emseg.dataset")}
    return TrainedModel(_state_from_bytes(data, uri), digest, uri, "registry", record)


def open_model(source: str | Path, tracking_uri: str | None = None) -> TrainedModel:
    """The trained model at ``source`` (any form of the module docstring's table)."""
    text = str(source)
    if text.startswith(REGISTRY_SCHEME):
        return _from_registry(text, tracking_uri)
    path = Path(text).expanduser()
    text = str(path.resolve()) if path.exists() else text  # recorded as the parent's source: where it was
    if path.is_dir():
        return _from_folder(path, text)
    if not path.is_file():
        raise ModelSourceError(f"init_from {text}: no such file or folder; give a bundle folder, a run folder, a "
                               f"weights file, a packed bundle or bioimage.io zip, or models:/NAME/VERSION")
    if path.suffix.lower() == ".zip":  # (a PyTorch weights file is a zip too, named .pt or .pth)
        return _from_zip(path, text)
    return _from_file(path, "weights", text)


# --- starting a training from a parent ---------------------------------------------------------------------------
def _class_count_key(network_def: Mapping, count: int) -> str | None:
    return next((k for k in CLASS_KEYS if network_def.get(k) == count), None)


def head_tensors(network_def: Mapping | None, state: Mapping[str, torch.Tensor], count: int) -> list[str]:
    """Names of the tensors indexed by class (the output head, deep-supervision heads too): those whose shape
    changes when the saved network is built with one class more (on the meta device: nothing is allocated)."""
    key = _class_count_key(network_def or {}, count)
    if key is None:
        return []
    with torch.device("meta"):
        wider = build_network({**network_def, key: count + 1}).state_dict()
    return [k for k, v in state.items() if k in wider and tuple(wider[k].shape) != tuple(v.shape)]


def class_mapping(child: Sequence[str], parent: Sequence[str] | None, class_map: Mapping | None,
                  source: str) -> list[int | None]:
    """For each class of ``child``, the parent's class index its head rows come from (None: re-initialised)."""
    child = list(child)
    if class_map:
        unknown_child = [k for k in class_map if k not in child]
        if unknown_child:
            raise ModelSourceError(f"class_map: {unknown_child[0]!r} is not a class of this bundle ({', '.join(child)})")
        if parent is None:
            raise ModelSourceError(f"class_map: {source} saved no class names, so its classes cannot be named; "
                                   f"leave class_map out to map them by position")
        unknown_parent = [v for v in class_map.values() if v is not None and v not in parent]
        if unknown_parent:
            raise ModelSourceError(f"class_map: {unknown_parent[0]!r} is not a class of {source} "
                                   f"({', '.join(parent)})")
        return [parent.index(class_map[c]) if class_map.get(c) is not None else None for c in child]
    if parent is None:
        return list(range(len(child)))  # nothing saved: by position (the shapes must agree)
    return [parent.index(c) if c in parent else None for c in child]


def initialise_network(network: nn.Module, parent: TrainedModel | None, class_names: Sequence[str],
                       class_map: Mapping | None = None) -> nn.Module:
    """``network`` (a bundle's, freshly built) with the ``parent``'s weights: every tensor copied by name, the
    head's rows copied for the classes mapped (:func:`class_mapping`: by name, or ``class_map`` {this bundle's class:
    the parent's class}) and left as initialised for the others. A parent whose other tensors differ in name or
    shape (another architecture or width) is refused. ``parent`` None: ``network`` unchanged."""
    if parent is None:
        return network
    own = network.state_dict()
    parent_classes = parent.class_names
    if parent_classes is not None:
        count = len(parent_classes)
    else:
        differing = [k for k in own if k in parent.state and parent.state[k].shape != own[k].shape]
        count = int(parent.state[differing[0]].shape[0]) if differing else len(class_names)
    heads = head_tensors(parent.network_def, parent.state, count)
    if not heads and count != len(class_names):
        raise ModelSourceError(f"init_from {parent.source}: it has {count} classes and this bundle {len(class_names)}, "
                               f"and no network definition was saved with it to find its output head")
    body = {k: v for k, v in parent.state.items() if k not in heads}
    missing = sorted(k for k in own if k not in parent.state)
    extra = sorted(k for k in body if k not in own)
    wrong = sorted(k for k in body if k in own and tuple(body[k].shape) != tuple(own[k].shape))
    if missing or extra or wrong:
        target = (parent.network_def or {}).get("_target_", "a network")
        detail = (f"tensor {wrong[0]} is {tuple(body[wrong[0]].shape)} there and {tuple(own[wrong[0]].shape)} here"
                  if wrong else f"tensor {(missing or extra)[0]} is {'missing there' if missing else 'not here'}")
        raise ModelSourceError(f"init_from {parent.source}: {target.split('.')[-1]} does not fit this bundle's "
                               f"{type(network).__name__} ({detail}); start from a model of the same architecture "
                               f"and width")
    mapping = class_mapping(class_names, parent_classes, class_map, parent.source)
    if parent_classes is None and count != len(class_names):
        raise ModelSourceError(f"init_from {parent.source}: {count} classes there, {len(class_names)} here, and no "
                               f"class names saved with it to map them")
    state = dict(body)
    for key in heads:
        rows = own[key].clone()
        for child_index, parent_index in enumerate(mapping):
            if parent_index is not None:
                rows[child_index] = parent.state[key][parent_index].to(rows.dtype)
        state[key] = rows
    network.load_state_dict(state)
    names = parent_classes or [str(i) for i in range(count)]
    described = ", ".join(f"{c} <- {names[p]}" if p is not None else f"{c} re-initialised"
                          for c, p in zip(class_names, mapping))
    logger.info("init_from %s (%s, sha256 %s...): %d of %d tensors loaded as they are%s", parent.source,
                parent.kind, parent.sha256[:12], len(body), len(own),
                f"; output head ({', '.join(heads)}) row by row: {described}" if heads else "")
    return network


def parent_model(init_from: str | Path | None, tracking_uri: str | None = None) -> TrainedModel | None:
    """The bundle key ``init_from`` read (:func:`open_model`), None when it is null or empty."""
    if init_from in (None, "", "None", "null"):
        return None
    return open_model(init_from, tracking_uri)


def parent_record(parent: TrainedModel | None) -> dict | None:
    """What a run records about its parent (run.json ``parent``, packed metadata, the bioimage.io export)."""
    return None if parent is None else parent.provenance()


def parent_params(parent: TrainedModel | None) -> dict:
    """MLflow params of a run's parent: ``init_from``, ``parent_sha256``, ``parent_run`` (empty without one)."""
    if parent is None:
        return {}
    return {"init_from": parent.source, "parent_sha256": parent.sha256,
            "parent_run": parent.record.get("run_name") or parent.record.get("mlflow_run_id") or ""}


BATCH_NORM = ("adapt", "keep")


def freeze_and_normalise(network: nn.Module, freeze: Sequence[str] = (), batch_norm: str = "adapt") -> nn.Module:
    """Fine-tuning choices on ``network``: parameters whose names start with one of ``freeze`` are not trained
    (``requires_grad`` off; the optimizer gets the others); ``batch_norm`` "adapt" lets batch norm's running
    statistics follow the new data (PyTorch's default), "keep" keeps the parent's (momentum 0)."""
    if batch_norm not in BATCH_NORM:
        raise ValueError(f"batch_norm_statistics must be one of {', '.join(BATCH_NORM)}, got {batch_norm!r} "
                         f"(the bundle key batch_norm_statistics, e.g. --batch_norm_statistics adapt)")
    names = [name for name, _ in network.named_parameters()]
    unknown = [prefix for prefix in freeze or () if not any(n.startswith(prefix) for n in names)]
    if unknown:
        first = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"freeze: no parameter of {type(network).__name__} starts with {unknown[0]!r}; its modules "
                         f"are {', '.join(first)}")
    frozen = 0
    for name, parameter in network.named_parameters():
        if any(name.startswith(prefix) for prefix in freeze or ()):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    if batch_norm == "keep":
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0
    if frozen or batch_norm == "keep":
        logger.info("fine-tuning: %d parameters frozen (%s), batch norm statistics %s", frozen,
                    ", ".join(freeze) or "none", "kept" if batch_norm == "keep" else "adapted")
    return network


def training_network(network: nn.Module, device: str | torch.device, channels_last: bool = False,
                     parent: TrainedModel | None = None, class_names: Sequence[str] = (),
                     class_map: Mapping | None = None, freeze: Sequence[str] = (),
                     batch_norm: str = "adapt") -> nn.Module:
    """A bundle's network ready to train: started from ``parent`` (:func:`initialise_network`), on ``device`` in
    the chosen layout, with the fine-tuning choices of :func:`freeze_and_normalise`."""

    network = initialise_network(network, parent, class_names, class_map)
    return freeze_and_normalise(prepare_network(network, device, channels_last), freeze, batch_norm)


def trainable(network: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer updates (all but the frozen ones)."""
    return [p for p in network.parameters() if p.requires_grad]
