"""Where a bundle lives: its own folder whatever the working directory; data and the MLflow store beside it."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT

from emseg.engine.paths import bundle_root, load_config, project_root


def test_project_root_is_above_bundles_or_the_bundle_itself(tmp_path):
    assert project_root(tmp_path / "bundles" / "unet") == str(tmp_path)
    assert project_root(tmp_path / "unpacked") == str(tmp_path / "unpacked")


def test_bundle_root_needs_a_running_workflow():
    with pytest.raises(RuntimeError, match="no MONAI bundle workflow is running; set bundle_root"):
        bundle_root()


def test_load_config_sets_the_bundle_root_and_applies_nested_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory
    parser = load_config(REPO_ROOT / "bundles" / "unet" / "configs" / "train.json",
                         {"train#dataloader#num_workers": 2, "epochs": 3})
    assert parser.get_parsed_content("bundle_root") == str(REPO_ROOT / "bundles" / "unet")
    assert parser.get_parsed_content("ckpt_dir") == str(REPO_ROOT / "bundles" / "unet" / "models")
    assert parser.get_parsed_content("dataset_dir") == str(REPO_ROOT / "data" / "isbi2012")
    assert parser["train#dataloader#num_workers"] == 2 and parser.get_parsed_content("lr_scheduler#T_max") == 3


def test_bundle_root_is_the_config_folders_bundle_when_a_workflow_runs(tmp_path, monkeypatch):
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(tmp_path)
    configs = REPO_ROOT / "bundles" / "unetpp" / "configs"
    for run_id, expected in (("bundle_root", configs.parent), ("ckpt_path", configs.parent / "models" / "model.pt")):
        workflow = ConfigWorkflow(config_file=str(configs / "inference.json"), workflow_type=None, logging_file=False,
                                  run_id=run_id)
        workflow.initialize()
        assert workflow.run() == [str(expected)]  # evaluated as the bundle CLI does, inside the workflow
