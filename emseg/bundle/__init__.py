"""Bundle tooling: where a bundle lives (``paths``), rendering its configs from the template (``render``),
packing and verifying it for sharing (``pack``), previewing what it trains on (``preview``)."""

from emseg.bundle.paths import bundle_root, load_config, project_root, running_workflow

__all__ = ["bundle_root", "load_config", "project_root", "running_workflow"]
