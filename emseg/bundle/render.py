"""Render a bundle's configs from the shared template and the bundle's own recipe.

What all bundles share is written once, in ``emseg/bundle/templates/`` (``train.json``,
``evaluate.json``, ``finetune.json``, ``multi_gpu_train.json``, ``inference.json``, ``inference_blockwise.json``,
``logging.conf``). What one bundle chooses (its name, its
network and width keys, recipe values that differ, its data set) is ``bundles/NAME/recipe.json``.
:func:`render_bundle` writes the bundle's full configs, model-zoo style: flat, every key present,
nothing referring outside the bundle folder. The rendered files are committed; ``emseg bundle
render --check`` (and a test) fails when one differs from what the template and recipe give.

Rules: a recipe key that the template has replaces the template's value in every config that has
it; any other recipe key (a network's width key, say) is new and goes into ``train.json`` before
``network_parameters`` and into ``inference.json`` before ``network_def``. ``bundle_name`` and
``network_def`` must be in the recipe; a bundle renders under its folder's name (:func:`bundle_name`), so a copied
and renamed bundle folder renders (and runs) as a bundle of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from emseg.io.files import write_text_atomically

TEMPLATES = Path(__file__).parent / "templates"
RECIPE = "recipe.json"
CONFIGS = ("train.json", "evaluate.json", "finetune.json", "multi_gpu_train.json", "inference.json",
           "inference_blockwise.json")
# where the recipe's own keys go in each config (evaluate.json, finetune.json, multi_gpu_train.json and
# inference_blockwise.json are overlays: they take template keys only)
ANCHORS = {"train.json": "network_parameters", "inference.json": "network_def"}
REQUIRED = ("bundle_name", "network_def")
WIDTH = 120  # characters per line of a rendered config


def _nested_component(value) -> bool:
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any((isinstance(v, dict) and "_target_" in v) or _nested_component(v) for v in inner)


def config_text(value, indent: int = 0, prefix: str = "") -> str:
    """A config as JSON a lab reads in one screen: 4-space indents, no line over :data:`WIDTH` characters where the
    values allow; a list or mapping on one line where it fits and holds no MONAI component; otherwise the top level
    one key per line, a component's ``_target_`` on a line of its own, and plain values as many to a line as fit."""
    flat = json.dumps(value)
    if not isinstance(value, (dict, list)) or not value or (
            not _nested_component(value) and indent + len(prefix) + len(flat) + 1 <= WIDTH):
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f'{json.dumps(k)}: ' + config_text(v, indent + 4, f'{json.dumps(k)}: ') for k, v in value.items()]
    else:
        items = [config_text(v, indent + 4) for v in value]
    lines, line = [], ""
    for number, item in enumerate(items):
        piece = item + ("," if number < len(items) - 1 else "")
        alone = "\n" in item or indent == 0 or (number == 0 and isinstance(value, dict) and "_target_" in value)
        candidate = f"{line} {piece}" if line else piece
        if line and (alone or len(pad) + len(candidate) > WIDTH):
            lines.append(line)
            candidate = piece
        line = candidate
        if alone:
            lines.append(line)
            line = ""
    if line:
        lines.append(line)
    open_, close = ("{", "}") if isinstance(value, dict) else ("[", "]")
    return open_ + "\n" + "\n".join(pad + text for text in lines) + "\n" + " " * indent + close


class RenderError(ValueError):
    """A recipe that cannot be rendered; the message names the file and the key."""


def _template(name: str) -> dict:
    return json.loads((TEMPLATES / name).read_text())


def read_recipe(bundle_dir: str | Path) -> dict:
    """The bundle's ``recipe.json``, checked for the required keys."""
    path = Path(bundle_dir) / RECIPE
    if not path.is_file():
        raise RenderError(f"{path}: missing; a bundle rendered by emseg keeps its own choices there")
    try:
        recipe = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RenderError(f"{path}: not valid JSON ({err})") from err
    missing = [key for key in REQUIRED if key not in recipe]
    if missing:
        raise RenderError(f"{path}: lacks {', '.join(missing)}")
    return recipe


def bundle_name(bundle_dir: str | Path) -> str:
    """The name a bundle renders under: its folder's. A copy in a folder of another name (``cp -r bundles/unet
    /lab/membranes``) is a bundle of its own, with its own runs and MLflow experiment; the recipe's
    ``bundle_name`` then says which bundle it was copied from."""
    return Path(bundle_dir).resolve().name


def render_config(template: dict, recipe: dict, anchor: str | None) -> dict:
    """``template`` with the recipe's values for its keys, and the recipe's new keys inserted before ``anchor``."""
    templates = [_template(name) for name in CONFIGS]
    new = {k: v for k, v in recipe.items() if not any(k in t for t in templates)}
    config: dict = {}
    for key, value in template.items():
        if key == anchor:
            config.update(new)
        config[key] = recipe.get(key, value)
    return config


def rendered_files(bundle_dir: str | Path) -> dict[str, str]:
    """File name (under ``configs/``) -> the text render writes for the bundle in ``bundle_dir``."""
    recipe = read_recipe(bundle_dir)
    recipe = {**recipe, "bundle_name": bundle_name(bundle_dir)}
    files = {name: config_text(render_config(_template(name), recipe, ANCHORS.get(name))) + "\n" for name in CONFIGS}
    files["logging.conf"] = (TEMPLATES / "logging.conf").read_text()
    return files


def render_bundle(bundle_dir: str | Path) -> list[Path]:
    """Write the bundle's rendered configs; return the files that changed."""
    configs = Path(bundle_dir) / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in rendered_files(bundle_dir).items():
        path = configs / name
        if not path.is_file() or path.read_text() != text:
            write_text_atomically(path, text)
            changed.append(path)
    return changed


def stale_files(bundle_dir: str | Path) -> list[Path]:
    """The bundle's config files that differ from what :func:`render_bundle` would write."""
    configs = Path(bundle_dir) / "configs"
    return [configs / name for name, text in rendered_files(bundle_dir).items()
            if not (configs / name).is_file() or (configs / name).read_text() != text]


def find_bundles(root: str | Path = "bundles") -> list[Path]:
    """Bundle folders under ``root`` that have a recipe, sorted by name."""
    return sorted(p.parent for p in Path(root).glob(f"*/{RECIPE}"))
