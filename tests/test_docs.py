"""The documentation builds and stays a front door: `mkdocs build --strict` passes (no broken link or anchor, every
page in the nav), README.md is at most 150 lines, and no page dates a result relatively ("this week")."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "bundles" / "README.md", *sorted(REPO_ROOT.glob("bundles/*/docs/README.md")),
         *sorted(REPO_ROOT.glob("docs/**/*.md"))]
RELATIVE_DATES = ["this week", "last week", "yesterday", "today", "last session", "this session", "two sessions ago",
                  "an earlier session", "this wave"]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]' installs mkdocs-material)")
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_a_front_door():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_docs_page_is_in_the_nav():
    nav = (REPO_ROOT / "mkdocs.yml").read_text()
    missing = [p.relative_to(REPO_ROOT / "docs").as_posix() for p in sorted((REPO_ROOT / "docs").glob("**/*.md"))
               if p.relative_to(REPO_ROOT / "docs").as_posix() not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO_ROOT).as_posix() for p in PAGES])
def test_no_relative_dates(page):
    text = page.read_text().lower()
    found = [phrase for phrase in RELATIVE_DATES if re.search(rf"\b{re.escape(phrase)}\b", text)]
    assert not found, f"{page.relative_to(REPO_ROOT)} dates results relatively: {found}; give the date (git log)"


def test_every_loss_and_preset_is_documented_by_the_name_the_code_registers():
    """Loss and preset names live once, in the modules that register them; the how-to names each of them."""
    from emseg.losses import LOSSES
    from emseg.transforms import PRESETS

    page = (REPO_ROOT / "docs" / "how-to" / "augmentation-losses.md").read_text()
    missing = [name for name in [*LOSSES, *PRESETS] if f"`{name}`" not in page]
    assert not missing, f"docs/how-to/augmentation-losses.md does not name {missing}"
