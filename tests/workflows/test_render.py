"""Bundle configs are rendered from one template and each bundle's recipe.json, and refer to nothing outside
their bundle folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from emseg.bundle.render import (
    RenderError,
    find_bundles,
    read_recipe,
    render_bundle,
    stale_files,
)
from emseg.engine.paths import load_config

BUNDLES = find_bundles(REPO_ROOT / "bundles")


def emseg_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emseg.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_every_bundle_has_a_recipe():
    assert {b.name for b in BUNDLES} == {"unet", "unetpp", "cenet", "encdec", "ternausnet11", "ternausnet16"}
    assert {p.parent.parent.name for p in (REPO_ROOT / "bundles").glob("*/configs/metadata.json")} == {b.name for b in BUNDLES}


def test_committed_configs_are_what_render_writes():
    result = emseg_cli("bundle", "render", "--check", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun 'emseg bundle render' and commit the configs"
    assert "6 bundles: configs match" in result.stdout


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_no_config_refers_outside_its_bundle(bundle):
    for path in (bundle / "configs").iterdir():
        text = path.read_text()
        assert "bundles/common" not in text and "../" not in text, path
        if path.suffix == ".json":  # MONAI macros (%file#key) would tie the bundle to another file
            strings = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
            assert not [s for s in strings if s.startswith("%")], path


@pytest.mark.slow
def test_a_changed_recipe_is_reported_stale_and_rendered(tmp_path):
    bundle = tmp_path / "bundles" / "encdec"
    shutil.copytree(REPO_ROOT / "bundles" / "encdec", bundle, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    recipe = json.loads((bundle / "recipe.json").read_text())
    recipe.update(epochs=7, features=[4, 8, 16, 32])
    (bundle / "recipe.json").write_text(json.dumps(recipe))
    result = emseg_cli("bundle", "render", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert f"{bundle / 'configs' / 'train.json'}: differs" in result.stdout.replace("bundles/encdec", str(bundle))
    assert "run 'emseg bundle render'" in result.stderr.splitlines()[-1]
    assert emseg_cli("bundle", "render", cwd=tmp_path).returncode == 0
    assert stale_files(bundle) == []
    train = json.loads((bundle / "configs" / "train.json").read_text())
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert train["epochs"] == 7 and "epochs" not in inference  # a template key goes where the template has it
    assert train["features"] == inference["features"] == [4, 8, 16, 32]  # a network key goes to both
    keys = list(train)
    assert keys.index("features") == keys.index("network_parameters") - 1
    evaluate = json.loads((bundle / "configs" / "evaluate.json").read_text())
    assert "features" not in evaluate  # the overlay takes the network from train.json


def test_render_refuses_a_recipe_without_its_network(tmp_path):
    bundle = tmp_path / "mynet"
    bundle.mkdir()
    (bundle / "recipe.json").write_text(json.dumps({"bundle_name": "mynet"}))
    with pytest.raises(RenderError, match=r"mynet/recipe.json: lacks network_def"):
        read_recipe(bundle)


def test_a_renamed_copy_renders_and_runs_as_a_bundle_of_its_own(tmp_path):
    """bundles/README.md: ``cp -r bundles/unet /lab/membranes`` makes the lab's own bundle."""
    copy = tmp_path / "lab" / "membranes"
    shutil.copytree(REPO_ROOT / "bundles" / "unet", copy, ignore=shutil.ignore_patterns("models", "runs", "eval"))
    result = emseg_cli("bundle", "render", str(copy), "--check", cwd=tmp_path)
    assert result.returncode == 1 and "train.json: differs" in result.stdout  # still named unet inside
    assert emseg_cli("bundle", "render", str(copy), cwd=tmp_path).returncode == 0
    assert stale_files(copy) == [] and json.loads((copy / "recipe.json").read_text())["bundle_name"] == "unet"
    for name in ("train.json", "inference.json"):
        assert json.loads((copy / "configs" / name).read_text())["bundle_name"] == "membranes"
    parser = load_config(copy / "configs" / "train.json")
    assert parser.get_parsed_content("experiment_name") == "emseg-membranes"
    assert parser.get_parsed_content("output_dir").startswith(str(copy / "runs" / "membranes-"))


def test_a_new_bundle_is_one_recipe_away(tmp_path):
    """What bundles/README.md says a new architecture needs: a recipe; render writes the configs."""
    bundle = tmp_path / "bundles" / "smallunet"
    bundle.mkdir(parents=True)
    recipe = json.loads((REPO_ROOT / "bundles" / "unet" / "recipe.json").read_text())
    (bundle / "recipe.json").write_text(json.dumps({**recipe, "bundle_name": "smallunet", "features": [4, 4, 8, 8, 8, 4]}))
    assert {p.name for p in render_bundle(bundle)} == {"train.json", "evaluate.json", "finetune.json",
                                                    "multi_gpu_train.json", "inference.json",
                                                    "inference_blockwise.json", "logging.conf"}
    assert json.loads((bundle / "configs" / "train.json").read_text())["bundle_name"] == "smallunet"
