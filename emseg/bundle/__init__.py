"""Bundle workflows: rendering a bundle's configs from the template (``render``), packing and verifying it for
sharing (``pack``, ``audit``), the bioimage.io export (``bioimageio``), previewing what it trains on (``preview``).

Where a running bundle lives is runtime knowledge and has its home in ``emseg.engine.paths``; configs rendered
before that move call ``emseg.bundle.bundle_root()``, so the two functions stay reachable here.
"""

from emseg.engine.paths import bundle_root, project_root

__all__ = ["bundle_root", "project_root"]
