"""Pack a bundle into a zip that runs with MONAI alone, and verify a packed bundle.

``emseg bundle pack bundles/NAME`` writes ``NAME_vVERSION.zip``, laid out as MONAI's bundle
specification asks::

    NAME/configs/metadata.json    the bundle's metadata
    NAME/configs/inference.json   runs models/model.ts with MONAI, torch and tifffile only
    NAME/configs/train.json, evaluate.json, inference_emseg.json, logging.conf
                                  the bundle's own emseg configs (need emseg to run)
    NAME/models/model.pt          weights (state dict, loads with weights_only=True)
    NAME/models/model.ts          TorchScript with metadata.json and inference.json inside
    NAME/large_files.json         sha256 of every model file (MONAI's large_files format)
    NAME/docs/README.md, NAME/LICENSE

``emseg bundle verify ZIP`` checks the metadata against the vendored schema (offline), the
checksums, and that the TorchScript network maps an input of the metadata's shape to an
output of the metadata's channels and size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import zipfile
from pathlib import Path

import torch

from emseg.io.files import sha256

logger = logging.getLogger(__name__)

SCHEMA = Path(__file__).parents[1] / "resources" / "bundle_metadata_schema.json"
MODEL_FILES = ("models/model.pt", "models/model.ts")
EMSEG_CONFIGS = ("train.json", "evaluate.json", "inference.json")


class BundleError(ValueError):
    """A bundle (folder or zip) that is incomplete, tampered with or inconsistent; the message names it."""


def _resolved(config: dict, keys, bundle_dir: Path) -> dict:
    """The values of ``keys`` of ``config`` with every expression evaluated."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    parser["bundle_root"] = str(bundle_dir)
    return {key: parser.get_parsed_content(key) for key in keys}


def monai_only_inference(config: dict) -> dict:
    """An inference config for the packed TorchScript model that needs MONAI, torch and tifffile only.

    Reads a TIFF stack (``--input_path``), normalises each slice, runs the sliding window
    with the bundle's patch size and overlap, and writes a float32 probability stack of
    ``output_channel`` or, for ``output`` = ``mask``, a uint8 class-index stack. ``config`` holds
    the values (expressions evaluated) of ``patch_size``, ``overlap``, ``sw_batch_size``,
    ``output_channel`` and ``output``.
    """
    mask = config.get("output") == "mask"
    select = "p.argmax(0).to(torch.uint8)" if mask else "p[@output_channel]"
    predict = ("[(lambda p: " + select + ")(@postprocessing(@inferer(@preprocessing(torch.as_tensor(s[None], "
               "dtype=torch.float32))[None].to(@device), @network)[0])).cpu().numpy() for s in @volume]")
    return {
        "imports": ["$import os", "$import numpy", "$import torch", "$import tifffile"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "input_path": None,
        "output_path": "$os.path.join(@bundle_root, 'eval', 'output.tif')",
        "patch_size": config["patch_size"],
        "overlap": config["overlap"],
        "sw_batch_size": config["sw_batch_size"],
        "output_channel": config["output_channel"],
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device)",
        "network": "$@network_def.eval()",
        "preprocessing": {"_target_": "NormalizeIntensity"},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@patch_size", "sw_batch_size": "@sw_batch_size",
                    "overlap": "@overlap", "mode": "gaussian"},
        "postprocessing": {"_target_": "Activations", "softmax": True},
        "volume": "$tifffile.imread(@input_path)",
        "initialize": ["$torch.set_grad_enabled(False)",
                       "$os.makedirs(os.path.dirname(os.path.abspath(@output_path)), exist_ok=True)"],
        "run": [f"$tifffile.imwrite(@output_path, numpy.stack({predict}), imagej=True, metadata={{'axes': 'ZYX'}})"],
    }


def export_torchscript(config: dict, weights: Path, target: Path, meta: dict, inference: dict) -> Path:
    """Build ``network_def`` of the (resolved) config, load ``weights`` and save TorchScript with both configs inside.

    Traced with one patch (the sliding window only ever feeds patches of that size), since
    some networks (UNet++ with pruning, CE-Net) do not script.
    """
    from monai.bundle import ConfigParser
    from monai.data import save_net_with_metadata

    from emseg.engine.runs import network_for
    from emseg.networks import load_weights

    parser = ConfigParser(config)
    parser["bundle_root"] = str(weights.parent.parent)  # not run by a bundle workflow here
    network = network_for(weights, parser.get_parsed_content("network_def"), parser.get_parsed_content("network_from"))
    network = load_weights(network, weights).float()
    example = torch.zeros(1, 1, *parser.get_parsed_content("patch_size"))
    with torch.no_grad():
        traced = torch.jit.trace(network, example, check_trace=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_net_with_metadata(traced, str(target.with_suffix("")), meta_values=meta,
                           more_extra_files={"inference.json": json.dumps(inference, indent=4).encode()})
    return target


def _config_with_overrides(config_file: Path, overrides: dict) -> dict:
    """The config as written, with ``overrides`` (top-level or nested ``a#b`` keys) applied."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(ConfigParser.load_config_file(str(config_file)))
    parser.update(overrides)
    return parser.get()


def evaluation_of(bundle_dir: Path, digest: str) -> dict | None:
    """The newest ``eval/*/evaluation.json`` of the bundle that scored exactly the weights with sha256 ``digest``."""
    found = []
    for path in (bundle_dir / "eval").glob("*/evaluation.json"):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if (record.get("weights") or {}).get("sha256") == digest:
            found.append((path.stat().st_mtime, record))
    return max(found, key=lambda item: item[0])[1] if found else None


def provenance(bundle_dir: Path, digest: str, record: dict) -> tuple[dict | None, dict]:
    """``eval_metrics`` of the weights with sha256 ``digest`` (None when they were never evaluated) and where the
    weights come from: run, MLflow run id, data set and split, and the evaluation the scores are from."""
    evaluation = evaluation_of(bundle_dir, digest)
    origin = {
        "weights_sha256": digest,
        "run_name": record.get("run_name"),
        "mlflow_run_id": record.get("mlflow_run_id"),
        "selected_by": {k: record.get(k) for k in ("metric", "value", "epoch")} if "metric" in record else None,
        "dataset": record.get("dataset"),
        "split": record.get("split"),
        "evaluation": "not evaluated",
    }
    if evaluation is None:
        return None, origin
    split = evaluation.get("eval_split", "test")
    origin.update(evaluation=evaluation.get("evaluation"), eval_split=split, eval_dataset=evaluation.get("dataset"),
                  eval_slices=evaluation.get("slices"))
    metrics = {f"{split}_{key}": value for key, value in evaluation["scores"].items() if value == value}  # not NaN
    return metrics, origin


def pack_bundle(bundle_dir: str | Path, output_dir: str | Path | None = None, run_name: str | None = None,
                weights: str | Path | None = None, overrides: dict | None = None) -> Path:
    """Write ``NAME_vVERSION.zip`` for the bundle in ``bundle_dir``; return its path.

    The weights are the promoted model (``models/model.pt``), run ``run_name``'s best model, or the file
    ``weights``. The network is the one saved with them (``overrides`` may set ``network_from`` to ``config``
    and the network's keys, for weights trained elsewhere). ``metadata.json``'s ``eval_metrics`` are replaced by
    the scores of exactly these weights, from the bundle's evaluation of them (matched by sha256), or removed when
    they were never evaluated; ``emseg_provenance`` records the run, MLflow run id, data set and split. The zip goes
    to ``output_dir`` (default: the project root, the folder holding ``bundles/``, or the bundle's parent folder).
    """
    from emseg.bundle.paths import project_root
    from emseg.engine.runs import weights_path, weights_record

    bundle_dir = Path(bundle_dir).resolve()
    name = bundle_dir.name
    meta_file = bundle_dir / "configs" / "metadata.json"
    weights = Path(weights) if weights else Path(weights_path(bundle_dir, run_name))
    for required in (meta_file, bundle_dir / "LICENSE", bundle_dir / "docs" / "README.md", weights):
        if not required.is_file():
            raise BundleError(f"{required}: missing, cannot pack {bundle_dir}" +
                              (" (train the bundle first)" if required == weights else ""))
    data = weights.read_bytes()  # read once: the digest, the export and the packed file are the same bytes
    digest = hashlib.sha256(data).hexdigest()
    record = weights_record(weights)
    if record.get("weights_sha256", digest) != digest:
        raise BundleError(f"{weights}: {weights.with_name('model.json')} describes other weights (sha256 "
                          f"{record['weights_sha256'][:12]}..., this file {digest[:12]}...); promote the run again "
                          f"(emseg bundle promote) or pack a run's weights with --run_name")
    meta = json.loads(meta_file.read_text())
    eval_metrics, meta["emseg_provenance"] = provenance(bundle_dir, digest, record)
    meta.pop("eval_metrics", None)
    if eval_metrics:
        meta["eval_metrics"] = eval_metrics
    default_output = bundle_dir.parent if project_root(bundle_dir) == str(bundle_dir) else project_root(bundle_dir)
    zip_path = Path(output_dir or default_output) / f"{name}_v{meta['version']}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        (root / "configs").mkdir(parents=True)
        (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
        configs = {f: _config_with_overrides(bundle_dir / "configs" / f, overrides or {}) for f in EMSEG_CONFIGS}
        packed_inference = monai_only_inference(_resolved(
            configs["inference.json"], ("patch_size", "overlap", "sw_batch_size", "output_channel", "output"), bundle_dir))
        (root / "configs" / "inference.json").write_text(json.dumps(packed_inference, indent=4))
        for f in ("train.json", "evaluate.json"):
            (root / "configs" / f).write_text(json.dumps(configs[f], indent=4))
        (root / "configs" / "inference_emseg.json").write_text(json.dumps(configs["inference.json"], indent=4))
        for f in ("logging.conf",):
            if (bundle_dir / "configs" / f).is_file():
                (root / "configs" / f).write_bytes((bundle_dir / "configs" / f).read_bytes())
        (root / "docs").mkdir()
        (root / "docs" / "README.md").write_bytes((bundle_dir / "docs" / "README.md").read_bytes())
        (root / "LICENSE").write_bytes((bundle_dir / "LICENSE").read_bytes())
        (root / "models").mkdir()
        (root / "models" / "model.pt").write_bytes(data)
        if record:  # what was saved with the weights (network, run): the packed emseg configs need no retyping
            (root / "models" / "model.json").write_text(json.dumps({**record, "weights_sha256": digest}, indent=2))
        export_torchscript(configs["inference.json"], root / "models" / "model.pt", root / "models" / "model.ts", meta,
                           packed_inference)
        large_files = [{"path": f, "url": "", "hash_val": sha256(root / f), "hash_type": "sha256"} for f in MODEL_FILES]
        (root / "large_files.json").write_text(json.dumps({"large_files": large_files}, indent=4))
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root.parent).as_posix())
    logger.info("packed %s (%s) into %s", bundle_dir, weights, zip_path)
    return zip_path


def _spatial(shape_spec, n: int) -> int:
    """``"16*n"`` -> 16 * n; an int stays."""
    if isinstance(shape_spec, int):
        return shape_spec
    factor = str(shape_spec).replace(" ", "").split("*")[0]
    return int(factor) * n


def verify_bundle(zip_path: str | Path) -> dict:
    """Check a packed bundle; raise :class:`BundleError` naming the problem, else return its metadata."""
    from monai.bundle import verify_metadata

    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise BundleError(f"{zip_path}: not a zip file")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp)
        roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(roots) != 1:
            raise BundleError(f"{zip_path}: expected one bundle folder at the top, found {[p.name for p in roots]}")
        root = roots[0]
        for required in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md",
                         "large_files.json", *MODEL_FILES):
            if not (root / required).is_file():
                raise BundleError(f"{zip_path}: {root.name}/{required} is missing")
        try:
            verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(SCHEMA))
        except Exception as err:
            raise BundleError(f"{zip_path}: metadata.json does not follow the bundle schema ({err})") from err
        for entry in json.loads((root / "large_files.json").read_text())["large_files"]:
            actual = sha256(root / entry["path"])
            if actual != entry["hash_val"]:
                raise BundleError(f"{zip_path}: {root.name}/{entry['path']} has sha256 {actual}, "
                                  f"large_files.json records {entry['hash_val']}: the file was changed")
        meta = json.loads((root / "configs" / "metadata.json").read_text())
        inputs = meta["network_data_format"]["inputs"]["image"]
        outputs = meta["network_data_format"]["outputs"]["pred"]
        size = list(json.loads((root / "configs" / "inference.json").read_text())["patch_size"])
        for value, spec in zip(size, inputs["spatial_shape"]):
            if value % _spatial(spec, 1):
                raise BundleError(f"{zip_path}: patch size {size} does not fit the input shape {inputs['spatial_shape']}")
        network = torch.jit.load(str(root / "models" / "model.ts"), map_location="cpu").eval()
        try:
            with torch.no_grad():
                out = network(torch.zeros(1, inputs["num_channels"], *size))
        except Exception as err:
            raise BundleError(f"{zip_path}: the network does not take a {[1, inputs['num_channels'], *size]} "
                              f"input as metadata.json says ({err})") from err
        if tuple(out.shape) != (1, outputs["num_channels"], *size):
            raise BundleError(f"{zip_path}: the network gives {tuple(out.shape)} for a {size} input, metadata.json "
                              f"says {outputs['num_channels']} channels of the input size")
        return meta
