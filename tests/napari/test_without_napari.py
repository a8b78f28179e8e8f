"""The core install works without napari: every module outside ``emseg.napari`` imports, and ``emseg`` runs, in a
Python where napari, magicgui and Qt cannot be imported."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

BLOCK = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'napari', 'magicgui', 'qtpy', 'PyQt5', 'npe2', 'superqt', 'vispy'}:
            raise ImportError(f'{name} is not installed (blocked by the test)')
        return None
sys.meta_path.insert(0, Blocked())
"""


def test_core_and_cli_work_without_napari():
    modules = sorted(".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (REPO_ROOT / "emseg").rglob("*.py")
                     if "napari" not in p.parts and p.name != "__main__.py")
    code = BLOCK + f"""
import importlib
for name in {modules!r}:
    importlib.import_module(name)
try:
    import napari
except ImportError:
    pass
else:
    raise SystemExit('napari was importable')
from emseg.cli import main
sys.argv = ['emseg', 'evaluate', '--help']
main()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: emseg evaluate" in result.stdout
    assert len(modules) > 80
