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
import re
import stat
import tempfile
import zipfile
from pathlib import Path

import torch

from emseg.bundle.audit import unlisted_code
from emseg.engine.paths import project_root
from emseg.engine.runs import network_for, weights_path, weights_record
from emseg.evaluation.challenge import SCORER
from emseg.io.files import sha256
from emseg.networks import load_state_dict, load_weights

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
    ``output_channel``, ``output`` and ``spacing`` (written with the ImageJ stack).
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
        "spacing": [float(v) for v in config["spacing"]],
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device)",
        "network": "$@network_def.eval()",
        "preprocessing": {"_target_": "NormalizeIntensity"},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@patch_size", "sw_batch_size": "@sw_batch_size",
                    "overlap": "@overlap", "mode": "gaussian"},
        "postprocessing": {"_target_": "Activations", "softmax": True},
        "volume": "$tifffile.imread(@input_path)",
        "initialize": ["$torch.set_grad_enabled(False)",
                       "$(_ for _ in ()).throw(FileExistsError(@output_path + ': exists (or is the input); choose "
                       "another --output_path')) if os.path.exists(@output_path) else None",
                       "$os.makedirs(os.path.dirname(os.path.abspath(@output_path)), exist_ok=True)"],
        "run": [f"$tifffile.imwrite(@output_path, numpy.stack({predict}), imagej=True, metadata={{'axes': 'ZYX', "
                f"'spacing': @spacing[0], 'unit': 'um'}}, resolution=(1 / @spacing[2], 1 / @spacing[1]))"],
    }


def export_torchscript(config: dict, weights: Path, target: Path, meta: dict, inference: dict) -> Path:
    """Build ``network_def`` of the (resolved) config, load ``weights`` and save TorchScript with both configs inside.

    Traced with one patch (the sliding window only ever feeds patches of that size), since
    some networks (UNet++ with pruning, CE-Net) do not script.
    """
    from monai.bundle import ConfigParser
    from monai.data import save_net_with_metadata


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


def without_tta(evaluation: dict) -> bool:
    """Whether an evaluation record scored the network's plain output (no flips or rotations averaged in)."""
    return [list(t) for t in evaluation.get("tta_transforms") or []] == [[0, False]]


def evaluation_of(bundle_dir: Path, digest: str) -> dict | None:
    """The ``eval/*/evaluation.json`` of the bundle that scored exactly the weights with sha256 ``digest``: one on the
    test split before one on another split (validation scores chose the weights), then one without test-time
    augmentation (how a packed or exported model runs), then the newest."""
    found = []
    for path in (bundle_dir / "eval").glob("*/evaluation.json"):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if (record.get("weights") or {}).get("sha256") == digest:
            preference = (record.get("eval_split", "test") == "test", without_tta(record), path.stat().st_mtime)
            found.append((preference, record))
    return max(found, key=lambda item: item[0])[1] if found else None


def provenance(bundle_dir: Path, digest: str, record: dict) -> tuple[dict | None, dict]:
    """``eval_metrics`` of the weights with sha256 ``digest`` (None when they were never evaluated) and where the
    weights come from: run, MLflow run id, data set and split, the parent model training started from, and the
    evaluation the scores are from."""
    evaluation = evaluation_of(bundle_dir, digest)
    origin = {
        "weights_sha256": digest,
        "run_name": record.get("run_name"),
        "mlflow_run_id": record.get("mlflow_run_id"),
        "selected_by": ({k: record.get(k) for k in ("metric", "value", "epoch", "selection")}
                        if "metric" in record else None),
        "dataset": record.get("dataset"),
        "split": record.get("split"),
        "parent": record.get("parent"),  # the model training started from (init_from), None: from scratch
        "evaluation": "not evaluated",
    }
    if evaluation is None:
        return None, origin
    split = evaluation.get("eval_split", "test")
    origin.update(evaluation=evaluation.get("evaluation"), eval_split=split, eval_dataset=evaluation.get("dataset"),
                  eval_slices=evaluation.get("slices"), eval_tta_transforms=evaluation.get("tta_transforms", "not recorded"))
    scores = dict(evaluation["scores"])
    thresholds = dict(evaluation.get("thresholds") or {})
    thresholds.update({k: scores.pop(k) for k in [k for k in scores if k.endswith("_threshold")]})  # older records
    if "v_rand" in scores and evaluation.get("scorer") != SCORER:
        # V_rand and V_info of an evaluation made before emseg scored as the challenge's code: not these scores
        scores = {k: v for k, v in scores.items() if not k.startswith(("v_rand", "v_info"))}
        thresholds = {k: v for k, v in thresholds.items() if not k.startswith(("v_rand", "v_info"))}
        origin["eval_note"] = ("V_rand and V_info left out: that evaluation predates the challenge's own scoring "
                               "procedure in emseg; evaluate the weights again to have them")
    if "v_rand" in scores:
        origin["eval_scorer"] = SCORER
    if thresholds:
        origin["eval_thresholds"] = thresholds
    metrics = {f"{split}_{key}": value for key, value in scores.items() if value == value}  # not NaN
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
                          f"(emseg bundle promote) or pack a run's weights with --run-name")
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
            configs["inference.json"], ("patch_size", "overlap", "sw_batch_size", "output_channel", "output", "spacing"),
            bundle_dir))
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


def _expected_digest(expected: str, zip_path: Path) -> str:
    """A sha256 given as 64 hex digits, or read from a checksum file (``sha256sum`` format) naming the zip."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", expected.strip()):
        return expected.strip().lower()
    path = Path(expected)
    if not path.is_file():
        raise BundleError(f"{expected}: neither a sha256 (64 hex digits) nor a checksum file")
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and Path(parts[-1].lstrip("*")).name == zip_path.name and re.fullmatch(r"[0-9a-fA-F]{64}",
                                                                                                     parts[0]):
            return parts[0].lower()
    raise BundleError(f"{path}: no sha256 line for {zip_path.name}")


def _extract(archive: zipfile.ZipFile, zip_path: Path, target: Path) -> Path:
    """Extract after refusing absolute or ``..`` member paths and symbolic links; return the one bundle folder."""
    for info in archive.infolist():
        name = Path(info.filename)
        if name.is_absolute() or ".." in name.parts:
            raise BundleError(f"{zip_path}: member {info.filename} points outside the bundle")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BundleError(f"{zip_path}: member {info.filename} is a symbolic link")
    archive.extractall(target)
    roots = [p for p in target.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise BundleError(f"{zip_path}: expected one bundle folder at the top, found {[p.name for p in roots]}")
    return roots[0]


def _check_large_files(root: Path, zip_path: Path) -> None:
    """Every model file is listed once in large_files.json, inside the bundle, a regular file, with its sha256."""
    entries = json.loads((root / "large_files.json").read_text()).get("large_files")
    if not isinstance(entries, list):
        raise BundleError(f"{zip_path}: large_files.json has no large_files list")
    listed = [entry.get("path") for entry in entries]
    missing = [f for f in MODEL_FILES if f not in listed]
    if missing:
        raise BundleError(f"{zip_path}: large_files.json does not list {', '.join(missing)}: their checksums "
                          f"cannot be checked")
    for entry in entries:
        path = root / str(entry.get("path"))
        if not path.resolve().is_relative_to(root.resolve()):
            raise BundleError(f"{zip_path}: large_files.json names {entry.get('path')}, outside the bundle")
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{zip_path}: large_files.json names {entry.get('path')}, not a regular file of the "
                              f"bundle")
        actual = sha256(path)
        if actual != entry.get("hash_val"):
            raise BundleError(f"{zip_path}: {root.name}/{entry['path']} has sha256 {actual}, "
                              f"large_files.json records {entry.get('hash_val')}: the file was changed")


def _check_same_weights(root: Path, zip_path: Path, network: torch.jit.ScriptModule) -> None:
    """models/model.pt holds the weights that models/model.ts runs."""

    weights = load_state_dict(root / "models" / "model.pt")
    scripted = network.state_dict()
    if set(weights) != set(scripted) or any(not torch.equal(weights[k].float(), scripted[k].float())
                                            for k in weights):
        raise BundleError(f"{zip_path}: models/model.pt and models/model.ts hold different weights: one of them "
                          f"was replaced")


def verify_bundle(zip_path: str | Path, expected_sha256: str | None = None, allow_code: bool = False) -> dict:
    """Check a packed bundle; raise :class:`BundleError` naming the problem, else return what was checked.

    Always: the zip's members stay inside the bundle, the metadata follows the schema, every model file is in
    ``large_files.json`` with its sha256, ``model.pt`` and ``model.ts`` hold the same weights, the network takes
    and gives what the metadata says, and the configs call nothing off the allow list
    (:mod:`emseg.bundle.audit`; ``allow_code`` accepts it after listing it). These checksums prove the files
    belong together, not who made them: only ``expected_sha256`` (the zip's digest, or a checksum file, published
    by the sender) ties the zip to its origin. The result's ``origin`` says which was checked.
    """
    from monai.bundle import verify_metadata


    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise BundleError(f"{zip_path}: not a zip file")
    origin = "integrity only: no sha256 from the sender was given (--sha256), so this says nothing of who made it"
    if expected_sha256:
        expected, actual = _expected_digest(expected_sha256, zip_path), sha256(zip_path)
        if actual != expected:
            raise BundleError(f"{zip_path}: sha256 {actual} is not the {expected} published by the sender: the zip "
                              f"was changed or is another one")
        origin = "the zip's sha256 matches the one published by the sender"
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(zip_path) as archive:
        root = _extract(archive, zip_path, Path(tmp))
        for required in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md",
                         "large_files.json", *MODEL_FILES):
            if not (root / required).is_file():
                raise BundleError(f"{zip_path}: {root.name}/{required} is missing")
        unlisted = unlisted_code(sorted((root / "configs").glob("*.json")))
        if unlisted and not allow_code:
            raise BundleError(f"{zip_path}: its configs run code off the allow list (MONAI, torch, numpy, tifffile, "
                              f"Ignite, emseg, os.path): {' | '.join(unlisted[:5])}"
                              f"{f' and {len(unlisted) - 5} more' if len(unlisted) > 5 else ''}; read them, and pass "
                              f"--allow-code only if you trust them")
        try:
            verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(SCHEMA))
        except Exception as err:
            raise BundleError(f"{zip_path}: metadata.json does not follow the bundle schema ({err})") from err
        _check_large_files(root, zip_path)
        meta = json.loads((root / "configs" / "metadata.json").read_text())
        inputs = meta["network_data_format"]["inputs"]["image"]
        outputs = meta["network_data_format"]["outputs"]["pred"]
        size = list(json.loads((root / "configs" / "inference.json").read_text())["patch_size"])
        for value, spec in zip(size, inputs["spatial_shape"]):
            if value % _spatial(spec, 1):
                raise BundleError(f"{zip_path}: patch size {size} does not fit the input shape {inputs['spatial_shape']}")
        network = torch.jit.load(str(root / "models" / "model.ts"), map_location="cpu").eval()
        _check_same_weights(root, zip_path, network)
        try:
            with torch.no_grad():
                out = network(torch.zeros(1, inputs["num_channels"], *size))
        except Exception as err:
            raise BundleError(f"{zip_path}: the network does not take a {[1, inputs['num_channels'], *size]} "
                              f"input as metadata.json says ({err})") from err
        if tuple(out.shape) != (1, outputs["num_channels"], *size):
            raise BundleError(f"{zip_path}: the network gives {tuple(out.shape)} for a {size} input, metadata.json "
                              f"says {outputs['num_channels']} channels of the input size")
        return {"metadata": meta, "origin": origin, "unlisted_code": unlisted}
