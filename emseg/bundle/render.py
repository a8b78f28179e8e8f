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
``network_def`` must be in the recipe.
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
    if recipe["bundle_name"] != Path(bundle_dir).resolve().name:
        raise RenderError(f"{path}: bundle_name is {recipe['bundle_name']!r} but the folder is "
                          f"{Path(bundle_dir).resolve().name!r}")
    return recipe


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
    files = {name: json.dumps(render_config(_template(name), recipe, ANCHORS.get(name)), indent=4) + "\n"
             for name in CONFIGS}
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
