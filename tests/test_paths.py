"""Bundle discovery: the same config works from the repository root and from inside the bundle."""

from __future__ import annotations

import pytest

from emseg.paths import find_bundle_root, project_root


@pytest.fixture()
def project(tmp_path):
    configs = tmp_path / "bundles" / "unet" / "configs"
    configs.mkdir(parents=True)
    (configs / "metadata.json").write_text("{}")
    return tmp_path


def test_from_repository_root(project):
    assert find_bundle_root("unet", project) == str(project / "bundles" / "unet")


def test_from_inside_the_bundle(project):
    bundle = project / "bundles" / "unet"
    assert find_bundle_root("unet", bundle) == str(bundle)
    assert find_bundle_root("unet", bundle / "configs") == str(bundle)


def test_other_bundle_is_not_taken(project):
    other = project / "bundles" / "unetpp" / "configs"
    other.mkdir(parents=True)
    (other / "metadata.json").write_text("{}")
    assert find_bundle_root("unet", other.parent) == str(project / "bundles" / "unet")


def test_unknown_bundle_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot find bundle 'cenet'.*--bundle_root"):
        find_bundle_root("cenet", tmp_path)


def test_project_root(project, tmp_path):
    assert project_root(project / "bundles" / "unet") == str(project)
    assert project_root(tmp_path / "unpacked") == str(tmp_path / "unpacked")
